"""Bad inputs to the attack library get a clear ValueError."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hycas_jax.attacks import apgd, autoattack, pgd, score, score_single, score_vote, square_linf


def _linear(params, x, key):
    del key
    return x.reshape(x.shape[0], -1) @ params


PARAMS = jnp.ones((16, 5)) * jnp.arange(5.0)
X = np.full((3, 4, 4, 1), 0.5, np.float32)
Y = np.array([0, 1, 4])
KEY = jax.random.key(0)


def _apgd(**changes):
    args = {"x": X, "y": Y, "key": KEY, "eps": 0.1, "n_iter": 2, **changes}
    return apgd(_linear, PARAMS, args.pop("x"), args.pop("y"), args.pop("key"), **args)


@pytest.mark.parametrize("changes,message", [
    ({"eps": -0.1}, "eps must be >= 0"),
    ({"eps": float("nan")}, "eps must be a finite number"),
    ({"norm": "l1"}, "unknown norm"),
    ({"loss": "hinge"}, "unknown loss"),
    ({"y": np.array([0, 1, 5])}, r"labels must lie in \[0, 5\)"),
    ({"y": np.array([0, -1, 2])}, r"labels must lie in \[0, 5\)"),
    ({"y": np.array([0, 1])}, r"y must have shape \(3,\)"),
    ({"y": np.array([0.0, 1.0, 2.0])}, "integer labels"),
    ({"x": X + 0.6}, r"x must be raw pixels in \[0, 1\]"),
    ({"x": X - 0.6}, r"x must be raw pixels in \[0, 1\]"),
    ({"x": np.where(X > 0, np.nan, X)}, "NaN"),
    ({"x": X.reshape(3, 16)}, r"x must be NHWC \(B, H, W, C\)"),
    ({"eot_iter": 0}, "eot_iter must be an integer >= 1"),
    ({"n_iter": 0}, "n_iter must be an integer >= 1"),
    ({"n_restarts": 0}, "n_restarts must be an integer >= 1"),
    ({"rho": 0.0}, "rho must lie in"),
    ({"loss": "ce-targeted", "n_target_classes": 5}, "n_target_classes must be <= 4"),
])
def test_apgd_rejects_bad_input(changes, message):
    with pytest.raises(ValueError, match=message):
        _apgd(**changes)


def test_dlr_losses_need_enough_classes():
    three_classes = PARAMS[:, :3]
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        apgd(_linear, three_classes, X, Y % 3, KEY, eps=0.1, loss="dlr-targeted")
    with pytest.raises(ValueError, match="needs at least 3 classes"):
        apgd(_linear, three_classes[:, :2], X, Y % 2, KEY, eps=0.1, loss="dlr")


def test_other_entry_points_reject_bad_input():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        pgd(_linear, PARAMS, X, Y, KEY, eps=-1.0, step_size=0.1, n_iter=1)
    with pytest.raises(ValueError, match="step_size must be >= 0"):
        pgd(_linear, PARAMS, X, Y, KEY, eps=0.1, step_size=-0.1, n_iter=1)
    with pytest.raises(ValueError, match="unknown loss"):
        pgd(_linear, PARAMS, X, Y, KEY, eps=0.1, step_size=0.1, n_iter=1, loss="dlr-targeted")
    with pytest.raises(ValueError, match="n_queries must be an integer >= 1"):
        square_linf(_linear, PARAMS, X, Y, KEY, eps=0.1, n_queries=0)
    with pytest.raises(ValueError, match="unknown version"):
        autoattack(_linear, PARAMS, X, Y, KEY, eps=0.1, version="plus")
    with pytest.raises(ValueError, match=r"x must be raw pixels in \[0, 1\]"):
        autoattack(_linear, PARAMS, X * 3, Y, KEY, eps=0.1)
    with pytest.raises(ValueError, match="unknown rule"):
        score(_linear, PARAMS, X, Y, KEY, rule="median")
    with pytest.raises(ValueError, match="labels must lie"):
        score_single(_linear, PARAMS, X, Y + 1, KEY)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        score_vote(_linear, PARAMS, X, Y, KEY, sigma=-0.5)
    with pytest.raises(ValueError, match="logits_fn must return"):
        apgd(lambda p, x, k: x, PARAMS, X, Y, KEY, eps=0.1)


def test_legacy_prng_keys_are_accepted():
    out = _apgd(key=jax.random.PRNGKey(0))
    assert out.x_adv.shape == X.shape
