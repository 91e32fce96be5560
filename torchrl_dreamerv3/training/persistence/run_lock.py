"""One process per run directory: an exclusive ``flock`` on ``<run>/run.lock``, held for the process's life.

The kernel drops the lock when the process dies (SIGKILL included), so a crashed run never leaves its
directory stuck; a second process meets a :class:`RunLockedError` naming the holder's pid.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["RunLock", "RunLockedError", "LOCK_FILE"]

LOCK_FILE = "run.lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """``with RunLock(run_dir): ...`` or ``lock = RunLock(run_dir).acquire()`` (released by ``release()``
    or at exit). The directory must exist: create it only after the config is checked."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None:  # already ours (``with run.lock`` after ``start_run`` took it)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"run directory {self.path.parent} is in use by another process (pid {holder}, "
                                 f"lock {self.path}); stop it first, or use another logdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # a lock held by a function's local (train()) ends with it, not with the process
        self.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
