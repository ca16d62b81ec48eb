"""`get_source`: one entry point from a data set name to a random-access source.

Families: the embedded sets (`mnist5k`, `digits8x8`, built offline from
installed packages), prepared TFDS sets (`tfds_sources.TABLE`) and MedMNIST
`.npz` files (`medmnist:/path/x.npz`, or a `medmnist.TABLE` name with `path=`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hycas_jax.data import embedded, medmnist, tfds_sources
from hycas_jax.data.info import DatasetInfo, check_expected

HOLDOUT = "holdout"  # the split of training examples held out for validation
HOLDOUT_SEED = 0  # which ones: fixed, whatever the training seed

KNOWN = {
    "embedded": sorted(embedded.BUILDERS),
    "tfds": sorted(tfds_sources.TABLE),
    "medmnist": sorted(medmnist.TABLE),
}


def _family(name: str) -> str:
    if name in embedded.BUILDERS:
        return "embedded"
    if name in tfds_sources.TABLE:
        return "tfds"
    if name.startswith("medmnist:") or name.split("_")[0] in medmnist.TABLE:
        return "medmnist"
    raise ValueError(
        f"Unknown dataset {name!r}. Known: {KNOWN} (MedMNIST also as 'medmnist:/path/x.npz')."
    )


class Subset:
    """The examples `indices` of a random-access source, in that order."""

    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.source[int(self.indices[i])]


def holdout_indices(num_train: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indices of a train split of `num_train` examples: `holdout` of them
    drawn by a fixed permutation (seed `HOLDOUT_SEED`), each set in increasing order."""
    if not 0 < holdout < num_train:
        raise ValueError(f"holdout must be in (0, {num_train}) for a train split of "
                         f"{num_train} examples, got {holdout}")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(num_train)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def get_source(name: str, split: str, *, data_dir=None, image_shape=None, num_classes=None,
               holdout: int = 0, **kwargs):
    """Returns (source, DatasetInfo) for one split of a data set.

    `source` has len() and [i] -> {'image': uint8 (H, W, C), 'label': int}, raw
    pixels. `split` is 'train' or 'test' (mapped to the set's own names, see
    `DatasetInfo.split_name`) or any split the family knows. `image_shape` and
    `num_classes`, when given (from a config), must match the data, else
    ValueError. Other keywords go to the family: embedded none; TFDS `config`,
    `attribute` (celeb_a), `image_size`; MedMNIST `path`.

    holdout: with k > 0, k training examples (`holdout_indices`) leave 'train' and form the
    split 'holdout', a validation set carved from the training data (test data stays
    untouched for tuning).
    """
    holdout = int(holdout or 0)
    if split == HOLDOUT and not holdout:
        raise ValueError(f"{name}: the '{HOLDOUT}' split needs dataset.holdout > 0 (how many "
                         "training examples to hold out)")
    if holdout and split in ("train", HOLDOUT):
        source, info = get_source(name, "train", data_dir=data_dir, image_shape=image_shape,
                                  num_classes=num_classes, **kwargs)
        kept, held = holdout_indices(len(source), holdout)
        chosen = held if split == HOLDOUT else kept
        return Subset(source, chosen), dataclasses.replace(info, num_train=len(kept))
    family = _family(name)
    if family == "embedded":
        src, info = embedded.source(name, split, data_dir, **kwargs)
    elif family == "tfds":
        src, info = tfds_sources.source(name, split, data_dir, **kwargs)
    else:
        src, info = medmnist.source(name, split, data_dir, **kwargs)
    check_expected(info, image_shape, num_classes)
    return src, info


__all__ = ["DatasetInfo", "HOLDOUT", "KNOWN", "get_source", "holdout_indices"]
