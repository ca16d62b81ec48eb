import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hycas_jax.models.gate import ConvexGate


def test_gate_is_a_per_channel_convex_combination():
    gate = ConvexGate(3, 2, rngs=nnx.Rngs(0))
    gate.logits[...] = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, -1.0]])
    alpha = gate.weights()
    np.testing.assert_allclose(alpha.sum(axis=0), 1.0, rtol=1e-6)
    s = [jnp.full((1, 2, 2, 2), v) for v in (1.0, 2.0, 4.0)]
    expected = 1.0 * alpha[0] + 2.0 * alpha[1] + 4.0 * alpha[2]
    np.testing.assert_allclose(gate(s)[0, 0, 0], expected, rtol=1e-6)


def test_uniform_gate_bound_is_the_max_stream_bound():
    gate = ConvexGate(3, 4, rngs=nnx.Rngs(0))
    # Constant weights 1/3: the triangle bound (1 + 2 + 3) / 3 beats Jensen's sqrt(14 / 3).
    assert gate.lipschitz_bound([1.0, 2.0, 3.0]) == pytest.approx(2.0, rel=1e-3)
    assert gate.lipschitz_bound([2.0, 2.0, 2.0]) == pytest.approx(2.0, rel=1e-3)


def test_per_channel_gate_can_exceed_max_stream_bound_and_ours_still_holds():
    # Stream b puts its whole (1-Lipschitz) gain into channel b, and the gate
    # picks stream b for channel b: the fused map copies x into both channels,
    # gain sqrt(2) > max_b L_b = 1. The spec's "max_b L_b" is not a bound here.
    gate = ConvexGate(2, 2, rngs=nnx.Rngs(0))
    gate.logits[...] = jnp.array([[30.0, -30.0], [-30.0, 30.0]])
    streams = lambda x: [jnp.concatenate([x, 0 * x], -1), jnp.concatenate([0 * x, x], -1)]
    x, y = jax.random.normal(jax.random.key(0), (2, 1, 3, 3, 1))
    gain = float(jnp.linalg.norm(gate(streams(x)) - gate(streams(y))) / jnp.linalg.norm(x - y))
    assert gain > 1.4
    assert gain <= gate.lipschitz_bound([1.0, 1.0])


def test_a_stream_level_gate_is_bounded_by_the_max_stream_bound():
    gate = ConvexGate(3, 4, per_channel=False, rngs=nnx.Rngs(0))
    gate.logits[...] = jnp.array([[2.0], [0.0], [-1.0]])
    assert gate.weights().shape == (3, 1)
    assert gate.lipschitz_bound([1.0, 1.5, 1.2]) <= 1.5 * 1.0001
    s = [jnp.full((1, 2, 2, 4), v) for v in (1.0, 2.0, 4.0)]
    alpha = gate.weights()[:, 0]
    np.testing.assert_allclose(gate(s)[0, 0, 0], jnp.full((4,), alpha @ jnp.array([1.0, 2.0, 4.0])),
                               rtol=1e-6)


def test_the_no_gate_ablation_averages_the_streams_and_is_not_trained():
    from hycas_jax.models.block import HyCASBlock
    block = HyCASBlock(2, 4, input_hw=(6, 6), gate="uniform", rngs=nnx.Rngs(0))
    params = nnx.state(block, nnx.Param)
    assert not any("gate" in str(path) for path, _ in nnx.to_flat_state(params))
    np.testing.assert_allclose(block.gate.weights(), 1.0 / 3.0, rtol=1e-6)
    s = [jnp.full((1, 2, 2, 4), v) for v in (1.0, 2.0, 6.0)]
    np.testing.assert_allclose(block.gate(s), 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown gate"):
        HyCASBlock(2, 4, input_hw=(6, 6), gate="none", rngs=nnx.Rngs(0))
