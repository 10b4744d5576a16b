"""One training process per run directory.

Two ``guidetune train`` of the same run (two terminals, a sweep and a hand-started run) would both write
``config.yaml`` and checkpoints, and one that sees the other's not-yet-started directory would delete it
to "start again". The main process therefore holds an exclusive ``flock`` on ``OUTPUT_DIR/.NAME.lock``
(beside the run directory, which may be deleted and recreated) for the whole run. The kernel drops the
lock when the process exits, killed or not, so a crash never leaves a stale lock behind. Where ``fcntl``
is missing (Windows) no lock is taken.
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise GuidetuneError(f"output_dir: cannot create the run's lock file '{path}': {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise GuidetuneError(
                f"run '{run_dir}' is being trained by another process (pid {holder}; lock {path}); wait for it "
                "to finish, or set name=... for a new run") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a waiting process)
