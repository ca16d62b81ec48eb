"""What a data set is (`DatasetInfo`) and the checks every loader shares."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of one image classification data set.

    Attributes:
      name: the name `get_source` was called with.
      image_shape: (H, W, C) of every image the source returns.
      num_classes: labels are ints in [0, num_classes).
      num_train: examples in the train split (counted when the data is read).
      num_test: examples in the test split (same rule).
      train_split: the split that the logical name 'train' reads.
      test_split: the split that 'test' reads (ImageNet's TFDS test split has
        no labels, so there it is 'validation').
      label: what the label means, in words (e.g. the CelebA attribute).
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_train: int
    num_test: int
    train_split: str = "train"
    test_split: str = "test"
    label: str = "class"

    def split_name(self, split: str) -> str:
        """This data set's own name for `split` ('train'/'test' may differ)."""
        return {"train": self.train_split, "test": self.test_split}.get(split, split)


def check_expected(info: DatasetInfo, image_shape=None, num_classes=None) -> None:
    """Raises ValueError when the data is not what the caller's config says."""
    if image_shape is not None and tuple(image_shape) != tuple(info.image_shape):
        raise ValueError(
            f"{info.name}: images have shape {tuple(info.image_shape)}, but the"
            f" config expects {tuple(image_shape)}."
        )
    if num_classes is not None and num_classes != info.num_classes:
        raise ValueError(
            f"{info.name}: the data has {info.num_classes} classes, but the"
            f" config expects {num_classes}."
        )


def check_labels(name: str, labels, num_classes: int) -> None:
    """Raises ValueError naming the first label outside [0, num_classes)."""
    labels = np.asarray(labels).reshape(-1)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"{name}: label {labels[bad[0]]} at index {bad[0]} is outside"
            f" [0, {num_classes})."
        )
