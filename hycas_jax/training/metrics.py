"""Training metrics to `metrics.jsonl` and TensorBoard, each step's once, across preemption.

Every row is on disk when `write` returns: both files are flushed and fsynced
(the events are written synchronously, through tensorboardX's record writer and
protos; its SummaryWriter queues them in a thread that a kill stops unflushed). A run killed after its last checkpoint has logged rows
that the resumed run logs again, from the same state: so on start at step T
the writer first drops what was logged after T (rows and events with a larger
step, and an earlier final evaluation at T) from both, rewriting each file
through a temporary and a rename. Only process 0 writes.

CLU's `metric_writers` would need TensorFlow (or torch) for its TensorBoard
writer; tensorboardX writes the same event files without either.
"""
from __future__ import annotations

import glob
import json
import os
import socket
import struct
import time

import jax

FINAL_PREFIX = "final/"  # TensorBoard tags of the end-of-run evaluation
_EVENTS_GLOB = "events.out.tfevents.*"


class MetricsWriter:
    """`write(step, metrics)` to both sinks; `write_final(step, metrics)` for the end."""

    def __init__(self, workdir: str, *, start_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        tb_dir = os.path.join(workdir, "tensorboard")
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        truncate_jsonl(self.jsonl_path, start_step)
        for path in glob.glob(os.path.join(tb_dir, _EVENTS_GLOB)):
            truncate_events(path, start_step)
        self.tb = _EventFile(tb_dir)
        self.jsonl = open(self.jsonl_path, "a")

    def write(self, step: int, metrics: dict, *, final: bool = False) -> None:
        if not self.active:
            return
        self.tb.write(step, {FINAL_PREFIX + k if final else k: v for k, v in metrics.items()})
        row = {"step": step, **({"final": True} if final else {}), **metrics}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        os.fsync(self.jsonl.fileno())

    def close(self) -> None:
        if self.active:
            self.tb.close()
            self.jsonl.close()


class _EventFile:
    """One TensorBoard event file, written synchronously: on disk when `write` returns."""

    def __init__(self, directory: str):
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import RecordWriter
        os.makedirs(directory, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.event_pb2, self.records = event_pb2, RecordWriter(os.path.join(directory, name))
        self.records.write(event_pb2.Event(wall_time=time.time(),
                                           file_version="brain.Event:2").SerializeToString())
        self.records.flush()

    def write(self, step: int, scalars: dict) -> None:
        from tensorboardX.summary import scalar
        for tag, value in scalars.items():
            event = self.event_pb2.Event(wall_time=time.time(), step=int(step),
                                         summary=scalar(tag, float(value)))
            self.records.write(event.SerializeToString())
        self.records.flush()  # flush and fsync

    def close(self) -> None:
        self.records.close()


def _stale(step: int, final: bool, start_step: int) -> bool:
    """Logged by a run that went past `start_step`, or that evaluated at its end."""
    return step > start_step or (final and step >= start_step)


def truncate_jsonl(path: str, start_step: int) -> None:
    """Drops the rows a resumed run at `start_step` writes again (and a torn last line)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if not _stale(row["step"], bool(row.get("final")), start_step):
                keep.append(json.dumps(row) + "\n")
    _replace(path, "".join(keep).encode())


def read_events(path: str):
    """The serialized records of a TFRecord event file; a record torn by a kill ends it."""
    with open(path, "rb") as f:
        blob = f.read()
    records, at = [], 0
    while at + 12 <= len(blob):
        (length,) = struct.unpack("<Q", blob[at:at + 8])
        end = at + 12 + length + 4
        if end > len(blob):
            break
        records.append(blob[at + 12:at + 12 + length])
        at = end
    return records


def truncate_events(path: str, start_step: int) -> None:
    """Drops the summaries a resumed run at `start_step` writes again."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c
    out = bytearray()
    for data in read_events(path):
        event = event_pb2.Event.FromString(data)
        if event.HasField("summary"):
            final = any(v.tag.startswith(FINAL_PREFIX) for v in event.summary.value)
            if _stale(event.step, final, start_step):
                continue
        header = struct.pack("<Q", len(data))
        out += header + struct.pack("<I", masked_crc32c(header))
        out += data + struct.pack("<I", masked_crc32c(data))
    _replace(path, bytes(out))


def _replace(path: str, content: bytes) -> None:
    with open(path, "rb") as f:
        if f.read() == content:
            return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
