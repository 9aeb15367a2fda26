"""Live views for the notebooks, in three layers that import downward only:

* :mod:`harness_lib.live.feed` — the process-wide feed: a background thread with its own
  event loop, one IB connection, and typed :class:`~harness_lib.live.snapshot.Snapshot`\\ s;
* :mod:`harness_lib.live.snapshot` — the snapshot type and the live verdict, which is the
  phases' own verdict (health, ticks, the ticks phase's staleness rule), never a copy;
* :mod:`harness_lib.live.views` — tables, HTML and plain-text findings drawn from a snapshot;
* :mod:`harness_lib.live.decisions` — the round-trip notebook's trade gate and its
  state → verdict → exit-code mapping.

Notebook arguments and the connection form live in :mod:`harness_lib.notebook`, which the
read-only post-mortem shares without importing any of this.

This package's ``__init__`` imports nothing, so importing a constant from it is free.
"""

LIVE_CLIENT_ID = 919
"""The live view's default clientId: not the runner's 917, so a notebook that also starts
a run (round trip, health probe) never collides with its own live connection (IB 326)."""
