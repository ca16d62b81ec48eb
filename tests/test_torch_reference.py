"""The PyTorch reference (benchmarks/torch_reference.py) computes what the JAX
model computes: same weights and the same standard-normal draws give the
same logits, and a training step advances the same parametrization."""
import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # the benchmarks' reference, checked with the slow suite

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch_reference  # noqa: E402

from hycas_jax import models  # noqa: E402


def _model(backbone, rani="per_block", image_shape=None):
    cfg = models.default_config(backbone)
    # The architecture the reference implements (benchmarks/common.py, `_as_measured`).
    cfg.rpfan, cfg.rani_spread = "depthwise", "free"
    if backbone == "resnet18":
        cfg.streams = models.STREAM_SCHEDULES["notebook"]
    cfg.rani = rani
    if image_shape is not None:
        cfg.image_shape = image_shape
        cfg.mean, cfg.std = (0.5,) * image_shape[2], (0.25,) * image_shape[2]
    if backbone == "resnet18":  # a narrow ResNet keeps the test fast
        cfg.widths = (8, 16, 16, 32)
    model = models.build(cfg, key=jax.random.key(0))
    # Move every parameter off its init (gates 0, RANI scale 1 / shift 0) so
    # a transposed or dropped weight cannot hide.
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def _torch_logits(model, x, draws, channels_last=False):
    xt = torch.from_numpy(np.transpose(np.asarray(x), (0, 3, 1, 2)).copy())
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    noise = torch_reference.ReplayNoise(draws)
    with torch.no_grad():
        out = torch_reference.from_jax(model)(xt, noise).numpy()
    assert not noise.draws, "torch used fewer draws than JAX made"
    return out


@pytest.mark.parametrize("backbone,rani,shape,channels_last", [
    ("small_cnn", "per_block", None, False),
    ("small_cnn", "per_block", None, True),
    ("small_cnn", "budgeted", (32, 32, 3), False),
    ("resnet18", "per_block", (16, 16, 3), True),
])
def test_same_logits_on_same_noise(backbone, rani, shape, channels_last):
    model = _model(backbone, rani, shape)
    x = jax.random.uniform(jax.random.key(2), (3, *model.image_shape))
    logits, draws = torch_reference.recorded_forward(model, x, jax.random.key(3))
    assert len(draws) > 3
    ours = _torch_logits(model, x, draws, channels_last)
    np.testing.assert_allclose(ours, logits, rtol=1e-4, atol=1e-5 * np.abs(logits).max())


def test_noise_changes_logits():
    """Guards the comparison above: the replayed draws really matter."""
    model = _model("small_cnn")
    x = jax.random.uniform(jax.random.key(2), (2, *model.image_shape))
    logits, draws = torch_reference.recorded_forward(model, x, jax.random.key(3))
    shuffled = [np.flip(d, axis=-1).copy() for d in draws]
    assert not np.allclose(_torch_logits(model, x, shuffled), logits, rtol=1e-3)


def test_inference_cache_matches_live_weights():
    model = torch_reference.from_jax(_model("small_cnn"))
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    with torch.no_grad():
        live = model(x, torch_reference.TorchNoise())
    torch.manual_seed(0)
    with model.inference():
        cached = model(x, torch_reference.TorchNoise())
    torch.testing.assert_close(cached, live)


def test_power_iteration_matches_jax():
    """One torch power-iteration step equals JAX's (vjp-based) step."""
    from hycas_jax.nn.conv import power_iterate_all
    model = _model("small_cnn")
    ref = torch_reference.from_jax(model)
    power_iterate_all(model)
    ref.power_iterate()
    jax_v = [np.transpose(np.asarray(u.streams[0].conv.v[...]), (0, 3, 1, 2)) for u in model.units]
    torch_v = [u.streams[0].conv.v.numpy() for u in ref.units]
    for a, b in zip(jax_v, torch_v):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_train_step_updates_every_parameter_with_a_gradient():
    model = torch_reference.from_jax(_model("small_cnn"))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch_reference.train_step(model, opt, torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]),
                                      sigma=0.25, temperature=10.0)
    assert np.isfinite(loss)
    for old, p in zip(before, model.parameters()):
        # A 1x1 orthogonal generator (c_in = 1) has zero gradient: expm(a - a) = 1.
        assert torch.equal(old, p) == (not p.grad.any())
