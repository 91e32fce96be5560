"""Files that survive a kill or a power cut: fsync, write-then-rename, and the errors a damaged file raises."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CheckpointError", "fsync_path", "fsync_tree", "write_text_atomic"]


class CheckpointError(RuntimeError):
    """A checkpoint (or one of its files) is missing, damaged or does not match what the run expects."""


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file's (or a directory's entries') data to disk; a rename is durable only after its
    directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync of every file and directory under ``root`` (itself included)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Readers see the old content or the new one, never a torn file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
