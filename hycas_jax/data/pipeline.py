"""grain input pipelines: a checkpointable train iterator and padded eval batches.

Both split the data between JAX processes by stride (process p of n reads
examples p, p + n, p + 2n, ...), so the shards are disjoint, together cover the
split, and differ in size by at most one. `batch_size` is the global batch;
each process yields its share, batch_size // process_count, ready for
`jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

import math

import grain
import jax
import numpy as np

from hycas_jax.data.sources import get_source


def _process(process_index, process_count) -> tuple[int, int]:
    """(index, count), defaulting to this JAX process; checked."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} not in [0, {count}).")
    return index, count


def _local_batch(batch_size: int, process_count: int) -> int:
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of process_count {process_count}."
        )
    return batch_size // process_count


def _to_unit(batch: dict) -> dict:
    """uint8 pixels -> float32 in [0, 1]; labels -> int32."""
    return {
        "image": np.asarray(batch["image"], np.float32) / np.float32(255.0),
        "label": np.asarray(batch["label"], np.int32),
    }


def train_iterator(name, *, batch_size, seed, data_dir=None, process_index=None,
                   process_count=None, split="train", **kwargs) -> grain.DatasetIterator:
    """Endless shuffled batches of this process's shard of `split`.

    Yields {'image': float32 (b, H, W, C) in [0, 1], 'label': int32 (b,)} with
    b = batch_size // process_count. Each epoch is a fresh permutation drawn
    from `seed`; batches run across epoch boundaries, so none is ever short.
    The iterator is checkpointable: `it.get_state()` is a small dict and
    `it.set_state(state)` on a new iterator built with the same arguments
    resumes with exactly the batches the old one would have produced
    (`grain.checkpoint.CheckpointSave/Restore` wrap it for orbax).
    `kwargs` go to `get_source`.
    """
    source, info = get_source(name, split, data_dir=data_dir, **kwargs)
    index, count = _process(process_index, process_count)
    local = _local_batch(batch_size, count)
    shard = grain.MapDataset.source(source)[index::count]
    if len(shard) < local:
        raise ValueError(
            f"{info.name}/{split}: shard of {len(shard)} examples is smaller than the"
            f" per-process batch {local}."
        )
    ds = shard.shuffle(seed=seed).repeat().to_iter_dataset()
    return iter(ds.batch(local, drop_remainder=True).map(_to_unit))


def eval_batches(name, split="test", *, batch_size, data_dir=None, skip=0, max_examples=None,
                 stride=1, process_index=None, process_count=None, **kwargs):
    """Ordered, padded batches of examples skip, skip + stride, ... of `split`
    (the first `max_examples` of them; all when None).

    Some splits are sorted by label (MNIST-5k's test split is): evaluate a
    subset with a stride of about len(split) / max_examples so it covers
    every class.

    Yields {'index': int64 (b,) global example index (-1 for padding),
    'image': float32 (b, H, W, C) in [0, 1] (zeros for padding), 'label':
    int32 (b,), 'mask': bool (b,) True for real examples}, b = batch_size //
    process_count. Every process yields the same number of batches (the last
    ones padded), so collective steps line up across hosts (big_vision style).
    Checks run when this is called, not at the first batch.
    """
    source, info = get_source(name, split, data_dir=data_dir, **kwargs)
    index, count = _process(process_index, process_count)
    local = _local_batch(batch_size, count)
    if not 0 <= skip <= len(source):
        raise ValueError(f"skip {skip} outside [0, {len(source)}] for {info.name}/{split}.")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    chosen = np.arange(skip, len(source), int(stride))[:max_examples]
    mine = chosen[index::count]
    steps = math.ceil(math.ceil(len(chosen) / count) / local)
    return _padded(source, info.image_shape, mine, local, steps)


def _padded(source, image_shape, indices, local, steps):
    """Generator behind `eval_batches`: `steps` batches of `local` slots each."""
    for step in range(steps):
        chunk = indices[step * local : (step + 1) * local]
        batch = {
            "index": np.full(local, -1, np.int64),
            "image": np.zeros((local, *image_shape), np.float32),
            "label": np.zeros(local, np.int32),
            "mask": np.zeros(local, bool),
        }
        if len(chunk):
            real = _to_unit(_stack([source[int(i)] for i in chunk]))
            n = len(chunk)
            batch["index"][:n], batch["mask"][:n] = chunk, True
            batch["image"][:n], batch["label"][:n] = real["image"], real["label"]
        yield batch


def _stack(examples: list[dict]) -> dict:
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in ("image", "label")}
