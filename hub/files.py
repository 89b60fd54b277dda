"""Files on the state volume written so that a reader never sees half of one. Pure (the
standard library only), on the bottom floor so every floor writes the same way."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text``: written into a hidden temporary beside it (same folder,
    same file system), then renamed over it, so a reader sees the old file or the new one.
    With ``mode`` the temporary is created with that mode, so the content is never readable by
    others, not even for a moment."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if mode is None:
        tmp.write_text(text)
    else:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    os.replace(tmp, path)


def append_line(path: str | Path, line: str) -> None:
    """Append one line (``line`` without its newline) and fsync, so it survives a crash."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
