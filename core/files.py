"""Files the project writes and trusts later: written whole or not at all, and identified by digest.

Every model, export, checkpoint, cache and index is written through `atomic_write`, so a crash
or a full disk mid-write never leaves a truncated file under the real name; the data is on disk
(fsync) before the rename, and the rename is on disk before the call returns.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to. When the block ends without an error
    the file is flushed to disk and renamed over `path`; otherwise it is removed. The temporary
    name keeps `path`'s suffix (numpy and torch pick a format by it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_tensors_atomic(obj: object, path: Path) -> None:
    """`torch.save` for files identified by their digest (exported models, converted weights).
    Saved to a path, torch names the archive's inner folder after the file, here the temporary
    name with its process id, so the same tensors gave a new sha256 on every export; through a
    buffer the folder is always "archive", and the same tensors always give the same bytes."""
    import io

    import torch  # here, so that importing this module stays cheap

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
