"""The post-mortem notebook as a script, with the proposed vectorised ``Store.costs()``.

Evidence for a recommendation, not a tool: it patches ``Store.costs`` in this process
only (``bench/proposals.py: fast_costs``, checked equal to the original on the generated
year by ``history_scale.py``) and then runs ``notebooks/postmortem.py`` exactly as
``python notebooks/postmortem.py -- ARGS`` would.

    uv run python bench/postmortem_fast_costs.py -- --store PATH --run ID
"""

from __future__ import annotations

import runpy
import sys
from datetime import datetime, timedelta
from typing import Any

from common import ROOT
from proposals import fast_costs

from harness_lib.store import Store

_original = Store.costs


def _costs(self: Store, since: datetime | timedelta | None = None) -> Any:
    return fast_costs(self) if since is None else _original(self, since)


if __name__ == "__main__":
    Store.costs = _costs  # type: ignore[method-assign]
    notebook = str(ROOT / "notebooks" / "postmortem.py")
    sys.argv = [notebook, *sys.argv[1:]]
    runpy.run_path(notebook, run_name="__main__")
