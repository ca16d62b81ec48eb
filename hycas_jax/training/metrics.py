"""Training metrics to `metrics.jsonl` and TensorBoard, each step's once, across preemption.

Every row is on disk when `write` returns: both files are appended and fsynced
(the events synchronously, with tensorboardX's protos; its SummaryWriter queues
them in a thread that a kill stops unflushed). Files go through `hycas_jax.runtime.files`,
so a `gs://` workdir works too. A run killed after its last checkpoint has logged rows
that the resumed run logs again, from the same state: so on start at step T
the writer first drops what was logged after T (rows and events with a larger
step, and an earlier final evaluation at T) from both, rewriting each file
through a temporary and a rename. Only process 0 writes.

CLU's `metric_writers` would need TensorFlow (or torch) for its TensorBoard
writer; tensorboardX writes the same event files without either.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import time

import jax

from hycas_jax.runtime import files

FINAL_PREFIX = "final/"  # TensorBoard tags of the end-of-run evaluation
_EVENTS_GLOB = "events.out.tfevents.*"


class MetricsWriter:
    """`write(step, metrics)` to both sinks; `final=True` for the end-of-run evaluation."""

    def __init__(self, workdir: str, *, start_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        tb_dir = files.path(workdir) / "tensorboard"
        self.jsonl_path = files.path(workdir) / "metrics.jsonl"
        truncate_jsonl(self.jsonl_path, start_step)
        for path in tb_dir.glob(_EVENTS_GLOB) if tb_dir.exists() else ():
            truncate_events(path, start_step)
        self.tb = _EventFile(tb_dir)

    def write(self, step: int, metrics: dict, *, final: bool = False) -> None:
        if not self.active:
            return
        self.tb.write(step, {FINAL_PREFIX + k if final else k: v for k, v in metrics.items()})
        row = {"step": step, **({"final": True} if final else {}), **metrics}
        files.append_bytes(self.jsonl_path, (json.dumps(row) + "\n").encode())

    def close(self) -> None:
        pass  # every write is complete on disk when it returns


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header))
            + data + struct.pack("<I", masked_crc32c(data)))


class _EventFile:
    """One TensorBoard event file, written synchronously: on disk when `write` returns."""

    def __init__(self, directory):
        from tensorboardX.proto import event_pb2
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.event_pb2, self.path = event_pb2, directory / name
        files.append_bytes(self.path, _record(event_pb2.Event(
            wall_time=time.time(), file_version="brain.Event:2").SerializeToString()))

    def write(self, step: int, scalars: dict) -> None:
        from tensorboardX.summary import scalar
        files.append_bytes(self.path, b"".join(_record(self.event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=scalar(tag, float(value))
        ).SerializeToString()) for tag, value in scalars.items()))


def _stale(step: int, final: bool, start_step: int) -> bool:
    """Logged by a run that went past `start_step`, or that evaluated at its end."""
    return step > start_step or (final and step >= start_step)


def truncate_jsonl(path, start_step: int) -> None:
    """Drops the rows a resumed run at `start_step` writes again (and a torn last line)."""
    if not files.path(path).exists():
        return
    old = files.read_bytes(path)
    keep = []
    for line in old.decode().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if not _stale(row["step"], bool(row.get("final")), start_step):
            keep.append(json.dumps(row) + "\n")
    new = "".join(keep).encode()
    if new != old:
        files.replace_bytes(path, new)


def read_events(path):
    """The serialized records of a TFRecord event file; a record torn by a kill ends it."""
    blob = files.read_bytes(path)
    records, at = [], 0
    while at + 12 <= len(blob):
        (length,) = struct.unpack("<Q", blob[at:at + 8])
        end = at + 12 + length + 4
        if end > len(blob):
            break
        records.append(blob[at + 12:at + 12 + length])
        at = end
    return records


def truncate_events(path, start_step: int) -> None:
    """Drops the summaries a resumed run at `start_step` writes again."""
    from tensorboardX.proto import event_pb2
    old = files.read_bytes(path)
    out = bytearray()
    for data in read_events(path):
        event = event_pb2.Event.FromString(data)
        if event.HasField("summary"):
            final = any(v.tag.startswith(FINAL_PREFIX) for v in event.summary.value)
            if _stale(event.step, final, start_step):
                continue
        out += _record(data)
    if bytes(out) != old:
        files.replace_bytes(path, bytes(out))
