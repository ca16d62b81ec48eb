"""Random crop and flip (the CIFAR recipe), drawn on the device from the step's key."""
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax.data.augment import augment, crop_flip

ROOT = Path(__file__).resolve().parent.parent


def test_each_image_is_a_shifted_window_of_its_zero_padded_self_maybe_flipped():
    x = jax.random.uniform(jax.random.key(0), (64, 8, 8, 3))
    out = np.asarray(crop_flip(jax.random.key(1), x))
    padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips, shifts = 0, set()
    for image, source in zip(out, padded):
        matches = [(i, j, f) for i in range(9) for j in range(9) for f in (False, True)
                   if np.array_equal(image, source[i:i + 8, j:j + 8][:, ::-1] if f
                                     else source[i:i + 8, j:j + 8])]
        assert matches, "an output is not a window of the padded image"
        flips += matches[0][2]
        shifts.add(matches[0][:2])
    assert 16 < flips < 48 and len(shifts) > 20  # both flips, many offsets


def test_same_key_same_images_and_none_is_the_identity():
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    np.testing.assert_array_equal(crop_flip(jax.random.key(2), x), crop_flip(jax.random.key(2), x))
    assert not np.array_equal(crop_flip(jax.random.key(2), x), crop_flip(jax.random.key(3), x))
    assert augment("none", jax.random.key(2), x) is x
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        augment("mixup", jax.random.key(2), x)
    jitted = jax.jit(lambda k, xx: augment("crop_flip", k, xx))
    np.testing.assert_array_equal(jitted(jax.random.key(2), x), crop_flip(jax.random.key(2), x))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_configs_are_the_papers_layout_with_crop_and_flip(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paper, notebook = module.get_config("0.25"), module.get_config("0.25,notebook")
    assert paper.training.sigma == paper.certify.sigma == 0.25
    assert paper.training.augment == notebook.training.augment == "crop_flip"
    assert paper.model.streams == (("sncan", "fdpan", "rpfan"),) * 4
    assert notebook.model.streams[2:] == (("sncan", "rpfan"), ("sncan",))
    with pytest.raises(ValueError, match="unknown stream schedule"):
        module.get_config("0.25,other")


def test_the_training_step_trains_on_augmented_images():
    import ml_collections
    import optax

    from hycas_jax.training import make_train_step
    seen = []

    def logits_fn(params, x, key):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), x)
        return x.reshape(x.shape[0], -1)[:, :2] * params[0][0]

    cfg = ml_collections.ConfigDict({"sigma": 0.0, "logit_temperature": 1.0})
    batch = {"image": jnp.ones((2, 8, 8, 1)), "label": jnp.array([0, 1])}
    def state():  # a fresh one per call: the step donates its input state
        return {"step": jnp.array(0), "params": jnp.ones((1,)), "rest": (),
                "opt_state": optax.sgd(0.1).init(jnp.ones((1,)))}
    # logits_fn gets (params, rest) and reads params[0]
    make_train_step(logits_fn, optax.sgd(0.1), cfg)(state(), batch, jax.random.key(0))
    assert np.array_equal(seen[-1], np.ones((2, 8, 8, 1)))  # no augmentation: the batch
    cfg.augment = "crop_flip"
    make_train_step(logits_fn, optax.sgd(0.1), cfg)(state(), batch, jax.random.key(0))
    assert (seen[-1] == 0).any()  # shifted in the zero padding
