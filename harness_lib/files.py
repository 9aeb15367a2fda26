"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text"]


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) via a fresh temp file in the same directory, fsync, and
    ``os.replace``, so a reader (a dashboard polling latest.json, launchd reading its
    plist) never sees a half-written file, two writers never share a temp file, and a
    failure leaves no temp file behind. Creates the parent directory.

    The file gets ``mode`` if given, else the temp file's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
