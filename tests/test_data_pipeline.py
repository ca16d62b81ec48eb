"""grain pipelines: resumable train iterator, per-process shards, padded eval."""
import numpy as np
import pytest

from hycas_jax.data import eval_batches, train_iterator

N_TRAIN, N_TEST = 23, 11


@pytest.fixture
def npz(tmp_path):
    """A tiny BloodMNIST-format file whose pixel (0, 0, 0) is the example id."""
    arrays = {}
    for split, n in (("train", N_TRAIN), ("val", 2), ("test", N_TEST)):
        images = np.zeros((n, 28, 28, 3), np.uint8)
        images[:, 0, 0, 0] = np.arange(n)
        images[:, 1, 1, :] = 255
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = (np.arange(n) % 8)[:, None]
    path = tmp_path / "bloodmnist.npz"
    np.savez(path, **arrays)
    return f"medmnist:{path}"


def ids(batch):
    return np.rint(batch["image"][:, 0, 0, 0] * 255).astype(int)


def test_train_batches_are_float_unit_and_reshuffled_each_epoch(npz):
    it = train_iterator(npz, batch_size=N_TRAIN, seed=0, process_index=0, process_count=1)
    first, second = next(it), next(it)
    assert first["image"].shape == (N_TRAIN, 28, 28, 3) and first["image"].dtype == np.float32
    assert first["label"].dtype == np.int32 and first["image"].max() == 1.0 and first["image"].min() == 0.0
    np.testing.assert_array_equal(first["label"], ids(first) % 8)
    assert sorted(ids(first)) == sorted(ids(second)) == list(range(N_TRAIN))
    assert list(ids(first)) != list(ids(second))


def test_state_restore_resumes_with_identical_batches(npz):
    it = train_iterator(npz, batch_size=4, seed=3, process_index=0, process_count=1)
    for _ in range(7):  # past the first epoch boundary
        next(it)
    state = it.get_state()
    expected = [ids(next(it)) for _ in range(5)]
    resumed = train_iterator(npz, batch_size=4, seed=3, process_index=0, process_count=1)
    resumed.set_state(state)
    np.testing.assert_array_equal([ids(next(resumed)) for _ in range(5)], expected)
    other_seed = train_iterator(npz, batch_size=4, seed=4, process_index=0, process_count=1)
    other_seed.set_state(state)
    assert not np.array_equal([ids(next(other_seed)) for _ in range(5)], expected)


def test_process_shards_are_disjoint_and_cover_the_data(npz):
    seen = []
    for p in range(2):
        it = train_iterator(npz, batch_size=4, seed=0, process_index=p, process_count=2)
        shard = {int(i) for _ in range(12) for i in ids(next(it))}
        assert len(next(it)["label"]) == 2  # per-process share of the global batch
        seen.append(shard)
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(N_TRAIN))


def test_eval_batches_pad_and_mask(npz):
    per_process = [list(eval_batches(npz, batch_size=6, process_index=p, process_count=2)) for p in range(2)]
    assert [len(b) for b in per_process] == [2, 2]  # same number of steps everywhere
    for batches in per_process:
        for b in batches:
            real = b["mask"]
            np.testing.assert_array_equal(b["index"][real], ids(b)[real])
            np.testing.assert_array_equal(b["label"][real], b["index"][real] % 8)
            assert (b["index"][~real] == -1).all() and (b["image"][~real] == 0).all()
    index = np.concatenate([b["index"][b["mask"]] for bs in per_process for b in bs])
    np.testing.assert_array_equal(np.sort(index), np.arange(N_TEST))
    assert [b["mask"].sum() for b in per_process[1]] == [3, 2]


def test_eval_skip_and_max_examples(npz):
    batches = list(eval_batches(npz, batch_size=4, skip=5, max_examples=5, process_index=0, process_count=1))
    assert [list(b["index"]) for b in batches] == [[5, 6, 7, 8], [9, -1, -1, -1]]
    last = list(eval_batches(npz, batch_size=4, skip=9, max_examples=100, process_index=0, process_count=1))
    assert [list(b["index"]) for b in last] == [[9, 10, -1, -1]]


def test_eval_stride_spreads_the_examples(npz):
    batches = list(eval_batches(npz, batch_size=2, skip=1, stride=3, max_examples=3,
                                process_index=0, process_count=1))
    assert [list(b["index"]) for b in batches] == [[1, 4], [7, -1]]
    assert [list(ids(b)[b["mask"]]) for b in batches] == [[1, 4], [7]]
    every = list(eval_batches(npz, batch_size=8, stride=5, process_index=0, process_count=1))
    assert [list(b["index"]) for b in every] == [[0, 5, 10, -1, -1, -1, -1, -1]]
    with pytest.raises(ValueError, match="stride must be >= 1"):
        eval_batches(npz, batch_size=4, stride=0, process_index=0, process_count=1)


def test_bad_arguments_are_clear(npz):
    with pytest.raises(ValueError, match="multiple of process_count 2"):
        train_iterator(npz, batch_size=5, seed=0, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="process_index 2 not in"):
        eval_batches(npz, batch_size=4, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="smaller than the per-process batch"):
        train_iterator(npz, batch_size=64, seed=0, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="skip 12 outside"):
        eval_batches(npz, batch_size=4, skip=12, process_index=0, process_count=1)


def test_process_defaults_come_from_jax(npz):
    batches = list(eval_batches(npz, batch_size=4))
    assert sum(b["mask"].sum() for b in batches) == N_TEST


def test_holdout_is_a_validation_split_carved_from_the_training_data():
    """dataset.holdout = k moves k fixed training examples into the 'holdout' split: the two
    are disjoint, together are the train split, do not depend on the training seed, and
    the test split is untouched."""
    import numpy as np

    from hycas_jax import data
    full, info = data.get_source("digits8x8", "train")
    kept, held_info = data.get_source("digits8x8", "train", holdout=100)
    held, _ = data.get_source("digits8x8", "holdout", holdout=100)
    assert len(held) == 100 and len(kept) == len(full) - 100 == held_info.num_train
    a, b = data.holdout_indices(len(full), 100)
    assert not set(a) & set(b) and sorted({*a, *b}) == list(range(len(full)))
    np.testing.assert_array_equal(held[7]["image"], full[int(b[7])]["image"])
    assert held[7]["label"] == full[int(b[7])]["label"]
    assert len(data.get_source("digits8x8", "test", holdout=100)[0]) == info.num_test
    # The training pipeline and evaluation read the same split definitions.
    batches = list(data.eval_batches("digits8x8", "holdout", batch_size=64, holdout=100))
    assert sum(int(x["mask"].sum()) for x in batches) == 100
    it = data.train_iterator("digits8x8", batch_size=32, seed=1, holdout=100)
    assert next(it)["image"].shape == (32, 8, 8, 1)
    with pytest.raises(ValueError, match="needs dataset.holdout > 0"):
        data.get_source("digits8x8", "holdout")
    with pytest.raises(ValueError, match="holdout must be in"):
        data.get_source("digits8x8", "train", holdout=len(full))
