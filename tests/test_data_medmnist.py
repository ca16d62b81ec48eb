"""MedMNIST .npz loading: official layout, single-label reduction, clear errors."""
import numpy as np
import pytest

from hycas_jax.data import get_source


def write_npz(path, n=(12, 4, 6), size=28, channels=3, num_classes=7, label_width=1, seed=0, **override):
    """A small file in the official MedMNIST layout; `override` replaces arrays."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, channels)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        high = 2 if label_width > 1 else num_classes
        arrays[f"{split}_labels"] = rng.integers(0, high, (count, label_width))
    arrays.update(override)
    np.savez_compressed(path, **arrays)
    return arrays


def test_dermamnist_by_prefix_and_by_path(tmp_path):
    arrays = write_npz(tmp_path / "dermamnist.npz")
    src, info = get_source(f"medmnist:{tmp_path / 'dermamnist.npz'}", "test")
    assert (info.image_shape, info.num_classes, info.num_train, info.num_test) == ((28, 28, 3), 7, 12, 6)
    assert len(src) == 6
    np.testing.assert_array_equal(src[2]["image"], arrays["test_images"][2])
    assert src[2]["label"] == arrays["test_labels"][2, 0]
    src, _ = get_source("dermamnist", "val", path=tmp_path / "dermamnist.npz")
    assert len(src) == 4
    src, _ = get_source("dermamnist", "train", data_dir=tmp_path)
    assert len(src) == 12


def test_grayscale_64_variant_gets_channel_axis(tmp_path):
    write_npz(tmp_path / "pathmnist_64.npz", size=64, channels=3, num_classes=9)
    write_npz(tmp_path / "octmnist_64.npz", size=64, channels=1, num_classes=4)
    _, info = get_source(f"medmnist:{tmp_path / 'pathmnist_64.npz'}", "train")
    assert info.image_shape == (64, 64, 3)
    src, info = get_source(f"medmnist:{tmp_path / 'octmnist_64.npz'}", "train")
    assert info.image_shape == (64, 64, 1) and src[0]["image"].shape == (64, 64, 1)


def test_chestmnist_reduces_to_any_finding(tmp_path):
    labels = np.zeros((6, 14), np.int64)
    labels[1, 3] = labels[4, [0, 13]] = 1
    write_npz(tmp_path / "chestmnist.npz", channels=1, label_width=14, test_labels=labels)
    src, info = get_source(f"medmnist:{tmp_path / 'chestmnist.npz'}", "test")
    assert info.num_classes == 2 and info.label == "any finding"
    assert [src[i]["label"] for i in range(6)] == [0, 1, 0, 0, 1, 0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(test_labels=np.full((6, 1), 7)), "label 7 at index 0 is outside"),
        (dict(test_labels=np.full((6, 1), -1)), "outside"),
        (dict(test_images=np.zeros((6, 28, 28), np.uint8)), r"shape \(28, 28\)"),
        (dict(test_images=np.zeros((6, 30, 30, 3), np.uint8)), "expected"),
        (dict(test_images=np.zeros((6, 28, 28, 3), np.float32)), "uint8"),
        (dict(test_labels=np.zeros((6, 2), np.int64)), r"expected \(N, 1\)"),
    ],
)
def test_bad_contents_are_named(tmp_path, kwargs, match):
    write_npz(tmp_path / "dermamnist.npz", **kwargs)
    with pytest.raises(ValueError, match=match):
        get_source(f"medmnist:{tmp_path / 'dermamnist.npz'}", "test")


def test_size_in_file_name_must_match(tmp_path):
    write_npz(tmp_path / "dermamnist_128.npz", size=64)
    with pytest.raises(ValueError, match="128 x 128"):
        get_source(f"medmnist:{tmp_path / 'dermamnist_128.npz'}", "test")


def test_missing_file_wrong_keys_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        get_source(f"medmnist:{tmp_path / 'nothere' / 'bloodmnist.npz'}", "test")
    np.savez(tmp_path / "bloodmnist.npz", x_train=np.zeros(3))
    with pytest.raises(ValueError, match="missing keys.*test_images"):
        get_source(f"medmnist:{tmp_path / 'bloodmnist.npz'}", "test")
    with pytest.raises(ValueError, match="Unknown MedMNIST set 'foomnist'"):
        get_source(f"medmnist:{tmp_path / 'foomnist.npz'}", "test")
    with pytest.raises(ValueError, match="Unknown dataset 'nosuchset'.*mnist5k"):
        get_source("nosuchset", "test")


def test_config_expectations_are_checked(tmp_path):
    write_npz(tmp_path / "retinamnist.npz", num_classes=5)
    name = f"medmnist:{tmp_path / 'retinamnist.npz'}"
    _, info = get_source(name, "test", image_shape=(28, 28, 3), num_classes=5)
    assert info.name == "retinamnist"
    with pytest.raises(ValueError, match="config expects 10"):
        get_source(name, "test", num_classes=10)
    with pytest.raises(ValueError, match=r"config expects \(32, 32, 3\)"):
        get_source(name, "test", image_shape=(32, 32, 3))
