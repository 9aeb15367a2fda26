"""A small trading dashboard built the way users build them: Starlette + uvicorn on ib_async.

It is the reference stack the harness's stack checks are tested against. It only reads from
IB (quotes, positions, executions) and never places, cancels or changes an order. ``--bug MODE``
swaps in one of five plausible code mistakes (see ``bugs.py``); without it the dashboard is
correct. Run it with ``uv run python -m examples.dashboard --help``.
"""
