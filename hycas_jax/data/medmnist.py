"""MedMNIST `.npz` files (the official layout), given by path.

A file holds `train_images, train_labels, val_images, val_labels, test_images,
test_labels`; images are uint8 (N, S, S) for grayscale sets or (N, S, S, 3)
for RGB, at S = 28 (`dermamnist.npz`) or the MedMNIST+ sizes 64, 128, 224
(`dermamnist_64.npz`, ...); labels are (N, 1) ints, or (N, 14) 0/1 for
ChestMNIST. Name a file as `medmnist:/path/to/dermamnist.npz`, or as
`dermamnist` with `path=` (or with `data_dir` holding `dermamnist.npz`).

ChestMNIST (NIH ChestX-ray14) is multi-label; it is reduced to one binary
label: 1 = any of the 14 findings present, 0 = "no finding".
Files are read whole into memory (as the `medmnist` package does).
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from hycas_jax.data.info import DatasetInfo, check_labels

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class MedEntry:
    """One MedMNIST set: source data, channels, classes, published split sizes."""

    source: str
    channels: int
    num_classes: int  # after the single-label reduction
    sizes: tuple[int, int, int]  # train, val, test
    multi_label: int = 0  # number of raw labels for multi-label sets


TABLE = {
    "pathmnist": MedEntry("NCT-CRC-HE-100K colon pathology", 3, 9, (89_996, 10_004, 7_180)),
    "chestmnist": MedEntry("NIH ChestX-ray14", 1, 2, (78_468, 11_219, 22_433), multi_label=14),
    "dermamnist": MedEntry("HAM10000 dermatoscopy", 3, 7, (7_007, 1_003, 2_005)),
    "octmnist": MedEntry("retinal OCT", 1, 4, (97_477, 10_832, 1_000)),
    "pneumoniamnist": MedEntry("pediatric chest X-ray", 1, 2, (4_708, 524, 624)),
    "retinamnist": MedEntry("DeepDRiD fundus (5 grades)", 3, 5, (1_080, 120, 400)),
    "breastmnist": MedEntry("breast ultrasound", 1, 2, (546, 78, 156)),
    "bloodmnist": MedEntry("blood cell microscopy", 3, 8, (11_959, 1_712, 3_421)),
    "tissuemnist": MedEntry("kidney cortex microscopy", 1, 8, (165_466, 23_640, 47_280)),
    "organamnist": MedEntry("abdominal CT, axial", 1, 11, (34_581, 6_491, 17_778)),
}
_STEM = re.compile(r"^([a-z]+)(?:_(\d+))?$")


class ArraySource:
    """Random-access source over in-memory arrays: {'image': uint8 HWC, 'label': int}."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self._images, self._labels = images, labels

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self._images[index], "label": int(self._labels[index])}


def parse_name(name: str, path=None, data_dir=None) -> tuple[str, int | None, str]:
    """(set name, size from the file name or None, path) for a MedMNIST name."""
    if name.startswith("medmnist:"):
        path = name[len("medmnist:") :]
        name = os.path.splitext(os.path.basename(path))[0]
    match = _STEM.match(name)
    if not match or match.group(1) not in TABLE:
        raise ValueError(f"Unknown MedMNIST set {name!r}; known: {sorted(TABLE)}")
    if path is None:
        if data_dir is None:
            raise ValueError(f"{name}: give `path=` to the .npz file (or a data_dir holding it).")
        path = os.path.join(data_dir, f"{name}.npz")
    size = int(match.group(2)) if match.group(2) else None
    return match.group(1), size, os.fspath(path)


def _load_arrays(path: str, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images, labels, {split: size}) of one split; errors name a missing file or key."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    if split not in SPLITS:
        raise ValueError(f"MedMNIST split must be one of {SPLITS}, got {split!r}")
    with np.load(path) as npz:
        keys = set(npz.files)
        expected = {f"{s}_{k}" for s in SPLITS for k in ("images", "labels")}
        if not expected <= keys:
            raise ValueError(
                f"{path} is not a MedMNIST file: missing keys {sorted(expected - keys)}"
                f" (found {sorted(keys)})."
            )
        sizes = {s: len(npz[f"{s}_labels"]) for s in ("train", "test")}
        return npz[f"{split}_images"], npz[f"{split}_labels"], sizes


def _check_images(name, images, entry, size) -> np.ndarray:
    """Images as (N, S, S, C) uint8, or ValueError saying what is wrong."""
    if images.ndim == 3 and entry.channels == 1:
        images = images[..., None]
    s = images.shape[1] if images.ndim == 4 else None
    if (images.ndim != 4 or images.shape[2] != s or images.shape[3] != entry.channels
            or s not in SIZES or (size is not None and s != size)):
        want = f"{size or 'S'} x {size or 'S'} x {entry.channels}, S in {SIZES}"
        raise ValueError(f"{name}: images have shape {images.shape[1:]}, expected {want}.")
    if images.dtype != np.uint8:
        raise ValueError(f"{name}: images are {images.dtype}, expected uint8.")
    return images


def _single_labels(name, labels, entry) -> np.ndarray:
    """(N,) int64 labels; multi-label rows become 'any finding' (1) vs none (0)."""
    width = entry.multi_label or 1
    if labels.ndim != 2 or labels.shape[1] != width:
        raise ValueError(f"{name}: labels have shape {labels.shape}, expected (N, {width}).")
    if entry.multi_label:
        check_labels(name, labels, 2)
        return labels.any(axis=1).astype(np.int64)
    check_labels(name, labels, entry.num_classes)
    return labels[:, 0].astype(np.int64)


def source(name, split, data_dir=None, *, path=None):
    """(ArraySource, DatasetInfo) for one split of a MedMNIST .npz file."""
    key, size, path = parse_name(name, path, data_dir)
    entry = TABLE[key]
    images, labels, sizes = _load_arrays(path, "val" if split == "validation" else split)
    images = _check_images(key, images, entry, size)
    labels = _single_labels(key, labels, entry)
    info = DatasetInfo(
        name=key, image_shape=images.shape[1:], num_classes=entry.num_classes,
        num_train=sizes["train"], num_test=sizes["test"],
        label="any finding" if entry.multi_label else "class",
    )
    return ArraySource(images, labels), info
