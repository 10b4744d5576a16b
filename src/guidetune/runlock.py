"""One training process per run directory.

Two ``guidetune train`` of the same run (two terminals, a sweep and a hand-started run) would both write
``config.yaml`` and checkpoints, and one that sees the other's not-yet-started directory would delete it
to "start again". The main process therefore holds an exclusive ``flock`` on ``OUTPUT_DIR/.NAME.lock``
(beside the run directory, which may be deleted and recreated) for the whole run, and removes the file
when it is done. The kernel drops the lock when the process exits, killed or not, so a crash never leaves
a lock that blocks (only an unlocked file, reused by the next run). Where ``fcntl`` is missing (Windows)
no lock is taken.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import GuidetuneError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def lock_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(f".{run_dir.name}.lock")


@contextlib.contextmanager
def run_lock(run_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the run's lock, or raise one line naming the process that holds it."""
    if not enabled or fcntl is None:
        yield
        return
    path = lock_path(run_dir)
    fd = _acquire(path, run_dir)
    try:
        yield
    finally:
        # Removed while still held, so nothing is left beside the runs; a process that opened the file
        # before the removal finds it unlinked once it gets the lock, and tries again on the new path.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _acquire(path: Path, run_dir) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise GuidetuneError(f"output_dir: cannot create the run's lock file '{path}': {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise GuidetuneError(
                f"run '{run_dir}' is being trained by another process (pid {holder}; lock {path}); wait for it "
                "to finish, or set name=... for a new run") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)  # the holder removed it as we waited: lock the file that is there now
