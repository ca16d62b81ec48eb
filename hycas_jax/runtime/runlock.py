"""One run at a time per output: a second, uncoordinated process pointed at the same
workdir (or certification log) is refused with a clear error instead of
interleaving its writes with the first's.

Only process 0 of a (coordinated) multi-process run takes the lock, so the
processes of one `jax.distributed` run share it. The lock is an advisory
`flock` on a file beside the outputs, released by the kernel when its holder
exits, however it exits: a killed run never leaves a stale lock. Paths that are
not local files (`gs://...`) are not locked.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

import jax


class BusyError(RuntimeError):
    """Another process holds the lock of the outputs this run would write."""


@contextlib.contextmanager
def exclusive(lock_path: str, what: str):
    """Holds the lock at `lock_path` for the body; BusyError names the holder."""
    if jax.process_index() != 0 or "://" in str(lock_path):
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown process"
            raise BusyError(f"{what} is in use by another run ({holder}); wait for it to "
                            f"finish or write elsewhere (lock: {lock_path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
