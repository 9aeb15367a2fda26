"""Wire recordings: every byte of a TWS session, stamped, in one compact file per run.

- ``format``:   the recording file format (versioned, documented) and its reader/writer
- ``mask``:     stable pseudonyms for account ids, applied before anything reaches disk
- ``tap``:      records an ib_async ``IB`` connection's traffic at near-zero cost
- ``protocol``: which request each server message answers (ids, contracts)
- ``derive``:   ticks rows for the store, decoded by ib_async's own decoder after the fact
- ``replay``:   a server that plays a recording back to any client
- ``drift``:    structural comparison of a recording against the simulator
- ``proxy``:    a transparent recording proxy between any client and a gateway
"""
