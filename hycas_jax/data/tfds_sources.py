"""TFDS image classification sets, read without TensorFlow via `tfds.data_source`.

Reading needs the data set already prepared in the `array_record` file format
under `data_dir` (None means TFDS's default: `$TFDS_DATA_DIR` or
~/tensorflow_datasets). Preparing is the one step that needs TensorFlow, an
optional extra: `pip install tensorflow` then
`tfds build NAME --file_format=array_record --data_dir=DIR`, or prepare on
another machine and copy DIR. ImageNet is a manual download: put
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in DIR/downloads/manual/
before `tfds build imagenet2012`.

Per-set choices:
  * celeb_a: binary label = one of the 40 attributes, default 'Smiling'
    (about half the faces; keyword `attribute=`, e.g. 'Male').
  * diabetic_retinopathy_detection: TFDS config 'btgraham-300' by default
    (fundus images rescaled to a 300-pixel eye radius and contrast-normalised
    as in the Kaggle winner's method; keyword `config=`); its images vary in
    size, so they are cropped to the central square and resized to 224x224.
  * imagenet2012: the TFDS test split has no labels, so 'test' reads
    'validation'; images vary in size and get the same crop-and-resize.
  Any set accepts `image_size=S` to crop-and-resize its images to S x S.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hycas_jax.data.info import DatasetInfo


@dataclasses.dataclass(frozen=True)
class TfdsEntry:
    """What we know of a TFDS set before reading it (published sizes)."""

    image_shape: tuple[int, int, int]  # after the default resize, if any
    num_classes: int
    num_train: int
    num_test: int
    test_split: str = "test"
    label_key: str = "label"
    config: str | None = None
    resize: bool = False  # stored images vary in size


TABLE = {
    "mnist": TfdsEntry((28, 28, 1), 10, 60_000, 10_000),
    "cifar10": TfdsEntry((32, 32, 3), 10, 50_000, 10_000),
    "cifar100": TfdsEntry((32, 32, 3), 100, 50_000, 10_000),
    "svhn_cropped": TfdsEntry((32, 32, 3), 10, 73_257, 26_032),
    "celeb_a": TfdsEntry((218, 178, 3), 2, 162_770, 19_962, label_key="attributes"),
    "patch_camelyon": TfdsEntry((96, 96, 3), 2, 262_144, 32_768),
    "diabetic_retinopathy_detection": TfdsEntry(
        (224, 224, 3), 5, 35_126, 42_670, config="btgraham-300", resize=True
    ),
    "imagenet2012": TfdsEntry(
        (224, 224, 3), 1000, 1_281_167, 50_000, test_split="validation", resize=True
    ),
}
DEFAULT_ATTRIBUTE = "Smiling"


def center_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Central square crop of an (H, W, C) uint8 image, resized to (size, size, C)."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = image[top : top + s, left : left + s]
    if s == size:
        return square
    resized = Image.fromarray(square.squeeze(-1) if square.shape[-1] == 1 else square)
    out = np.asarray(resized.resize((size, size), Image.BILINEAR))
    return out.reshape(size, size, image.shape[-1])


class LabelledSource:
    """Random-access view of a TFDS source as {'image': uint8 HWC, 'label': int}."""

    def __init__(self, source, label_fn, image_size: int | None = None):
        self._source = source
        self._label_fn = label_fn
        self._image_size = image_size

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        ex = self._source[index]
        image = np.asarray(ex["image"])
        if self._image_size is not None:
            image = center_resize(image, self._image_size)
        return {"image": image, "label": self._label_fn(ex)}


def _prepared_builder(full_name: str, data_dir):
    """The TFDS builder, or FileNotFoundError saying how to prepare the data."""
    builder = tfds.builder(full_name, data_dir=data_dir)
    how = (
        f"Prepare it with TensorFlow installed (optional extra): `tfds build"
        f" {full_name} --file_format=array_record"
        f"{' --data_dir=' + str(data_dir) if data_dir else ''}`, or prepare it on"
        f" another machine and copy the data directory."
    )
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {full_name!r} is not prepared in {builder.data_dir}. {how}"
        )
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise FileNotFoundError(
            f"TFDS dataset {full_name!r} in {builder.data_dir} is stored as"
            f" {builder.info.file_format.value}; reading without TensorFlow needs"
            f" array_record. {how}"
        )
    return builder


def _label_fn(name: str, features, entry: TfdsEntry, attribute: str | None):
    """Reads the label from a raw example; checks it against the table."""
    if name == "celeb_a":
        attribute = attribute or DEFAULT_ATTRIBUTE
        known = sorted(features["attributes"].keys())
        if attribute not in known:
            raise ValueError(f"celeb_a has no attribute {attribute!r}; known: {known}")
        return (lambda ex: int(ex["attributes"][attribute])), f"celeb_a:{attribute}"
    if attribute is not None:
        raise ValueError(f"{name}: `attribute` only applies to celeb_a.")
    got = features[entry.label_key].num_classes
    if got != entry.num_classes:
        raise ValueError(f"{name}: prepared data has {got} classes, expected {entry.num_classes}.")
    return (lambda ex: int(ex[entry.label_key])), "class"


def _image_shape(name, features, entry, image_size):
    """(H, W, C) the source will return, and the resize to apply (or None)."""
    if image_size is None and entry.resize:
        image_size = entry.image_shape[0]
    stored = tuple(features["image"].shape)
    if image_size is not None:
        return (image_size, image_size, stored[-1]), image_size
    if stored != entry.image_shape:
        raise ValueError(
            f"{name}: prepared images have shape {stored}, expected {entry.image_shape}."
        )
    return entry.image_shape, None


def source(name, split, data_dir=None, *, config=None, attribute=None, image_size=None):
    """(LabelledSource, DatasetInfo) for a prepared TFDS set in `TABLE`."""
    entry = TABLE[name]
    config = config or entry.config
    full_name = f"{name}/{config}" if config else name
    builder = _prepared_builder(full_name, data_dir)
    features = builder.info.features
    label_fn, label = _label_fn(name, features, entry, attribute)
    shape, resize = _image_shape(name, features, entry, image_size)
    splits = builder.info.splits
    count = lambda s: splits[s].num_examples if s in splits else 0
    info = DatasetInfo(
        name=name, image_shape=shape, num_classes=entry.num_classes,
        num_train=count("train"), num_test=count(entry.test_split),
        test_split=entry.test_split, label=label,
    )
    raw = tfds.data_source(
        full_name, split=info.split_name(split), data_dir=data_dir, download=False
    )
    return LabelledSource(raw, label_fn, resize), info
