"""The one path layer of the run's small files (config.json, metrics, event files):
`etils.epath`, so a workdir may be local or a bucket (`gs://...`), as orbax's
checkpoints already may.

Local files are appended in place and fsynced, and replaced through a temporary
and a rename; object stores have neither append nor rename-over, so there a
file is rewritten whole (these files are small), which an object store does
atomically.
"""
from __future__ import annotations

import os

from etils import epath


def path(p) -> epath.Path:
    return epath.Path(p)


def is_local(p) -> bool:
    return "://" not in str(p)


def append_bytes(p, data: bytes) -> None:
    """Adds `data` at the end of the file `p` (created if missing), durably."""
    if is_local(p):
        with open(p, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    p = path(p)
    p.write_bytes((p.read_bytes() if p.exists() else b"") + data)


def replace_bytes(p, data: bytes) -> None:
    """Makes `data` the whole content of `p`; a reader sees the old or the new file."""
    if is_local(p):
        tmp = f"{p}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        return
    path(p).write_bytes(data)


def read_bytes(p) -> bytes:
    return path(p).read_bytes()


class AppendLog:
    """A resumable, append-only text log, one line per finished unit of work.

    Each line is written whole with its newline and made durable before `append`
    returns, so bytes after the last newline can only be a line cut short by an
    interruption: opening the log drops them. `header` (a first line, e.g. column
    names) is written to a new log and must match an existing one's.
    """

    def __init__(self, p, header: str | None = None):
        self.path = p
        data = read_bytes(p) if path(p).exists() else b""
        end = data.rfind(b"\n") + 1
        if end != len(data):
            replace_bytes(p, data[:end])
        lines = data[:end].decode().splitlines()
        if header is not None:
            if not lines:
                replace_bytes(p, (header + "\n").encode())
                lines = [header]
            elif lines[0] != header:
                raise ValueError(f"log {p} starts with {lines[0]!r}, expected {header!r}")
            lines = lines[1:]
        self.lines = lines

    def append(self, line: str) -> None:
        if "\n" in line:
            raise ValueError("a log line cannot contain a newline")
        append_bytes(self.path, (line + "\n").encode())
        self.lines.append(line)
