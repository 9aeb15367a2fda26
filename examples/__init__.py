"""Runnable examples (a package so `python -m examples.dashboard` works from the repo root)."""
