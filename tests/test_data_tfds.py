"""TFDS loaders on small fake datasets with the real builders' names and features.

Each fake builder subclasses the registered TFDS builder (same name, version,
config and feature layout) and writes random examples as array_record, with
images PNG-encoded by PIL so no TensorFlow is needed.
"""
import io
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from hycas_jax.data import eval_batches, get_source

SPLITS = {"train": 6, "test": 3, "validation": 4}


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buf, format="PNG")
    return buf.getvalue()


def _random(feature, rng):
    """A random value for any feature in the tables' datasets."""
    if isinstance(feature, tfds.features.FeaturesDict):
        return {k: _random(f, rng) for k, f in feature.items()}
    if isinstance(feature, tfds.features.Image):
        shape = [d or int(rng.integers(40, 60)) for d in feature.shape]
        return _png(rng.integers(0, 256, shape, dtype=np.uint8))
    if isinstance(feature, tfds.features.ClassLabel):
        return int(rng.integers(feature.num_classes))
    if isinstance(feature, tfds.features.Text):
        return "fake"
    return rng.integers(2, dtype=np.int64).astype(feature.np_dtype)


def write_fake(name, data_dir, config=None, splits=SPLITS):
    """Writes `splits` of random examples as the TFDS dataset `name`."""
    base = tfds.builder_cls(name)

    class Fake(base, skip_registration=True):
        url_infos = None  # nothing to download; avoids a checksums lookup

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(n, s) for s, n in splits.items()}

        def _generate_examples(self, n, split):
            rng = np.random.default_rng(len(split))
            for i in range(n):
                yield i, _random(self.info.features, rng)

    Fake.name = base.name
    builder = Fake(data_dir=data_dir, config=config, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    write_fake("cifar10", data_dir)
    write_fake("celeb_a", data_dir)
    write_fake("diabetic_retinopathy_detection", data_dir, config="btgraham-300")
    write_fake("imagenet2012", data_dir)
    return data_dir


def test_cifar10_reads_raw_pixels(fake_dir):
    src, info = get_source("cifar10", "train", data_dir=fake_dir)
    assert (info.image_shape, info.num_classes, info.num_train, info.num_test) == ((32, 32, 3), 10, 6, 3)
    ex = src[5]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (32, 32, 3)
    assert 0 <= ex["label"] < 10


def test_celeb_a_label_is_the_attribute(fake_dir):
    raw = tfds.data_source("celeb_a", split="test", data_dir=fake_dir, download=False)
    for attribute in ("Smiling", "Male", "Eyeglasses"):
        kwargs = {} if attribute == "Smiling" else {"attribute": attribute}
        src, info = get_source("celeb_a", "test", data_dir=fake_dir, **kwargs)
        assert info.label == f"celeb_a:{attribute}" and info.num_classes == 2
        want = [int(raw[i]["attributes"][attribute]) for i in range(len(raw))]
        assert [src[i]["label"] for i in range(len(src))] == want
    with pytest.raises(ValueError, match="no attribute 'Smile'.*Smiling"):
        get_source("celeb_a", "test", data_dir=fake_dir, attribute="Smile")


def test_variable_size_sets_are_resized(fake_dir):
    src, info = get_source("diabetic_retinopathy_detection", "train", data_dir=fake_dir)
    assert info.image_shape == (224, 224, 3) and src[0]["image"].shape == (224, 224, 3)
    src, info = get_source("imagenet2012", "test", data_dir=fake_dir, image_size=64)
    assert info.test_split == "validation" and len(src) == SPLITS["validation"]
    assert src[0]["image"].shape == (64, 64, 3) and src[0]["image"].dtype == np.uint8
    batches = list(eval_batches("imagenet2012", batch_size=3, data_dir=fake_dir, image_size=64))
    assert [b["mask"].sum() for b in batches] == [3, 1]


def test_unprepared_or_unknown_config_is_a_clear_error(fake_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared.*tfds build mnist --file_format=array_record"):
        get_source("mnist", "train", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        get_source("diabetic_retinopathy_detection", "train", data_dir=fake_dir, config="250K")
    with pytest.raises(ValueError, match="only applies to celeb_a"):
        get_source("cifar10", "train", data_dir=fake_dir, attribute="Male")


def test_tfrecord_copy_is_a_clear_error(tmp_path):
    write_fake("cifar10", tmp_path, splits={"train": 2})
    info_path = next(tmp_path.glob("cifar10/*/dataset_info.json"))
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "fileFormat": "tfrecord"}))
    with pytest.raises(FileNotFoundError, match="stored as tfrecord.*needs array_record"):
        get_source("cifar10", "train", data_dir=tmp_path)
