import jax
import jax.numpy as jnp
import pytest
from conftest import dense_matrix, top_singular_value
from flax import nnx

from hycas_jax.models.block import HyCASBlock

HW = (6, 6)


@pytest.mark.parametrize("rani", ["per_block", "budgeted", "off"])
def test_block_bound_holds_and_rani_placements_give_the_spec_factors(rani):
    block = HyCASBlock(2, 4, 3, input_hw=HW, stride=2, rani=rani, rngs=nnx.Rngs(0))
    bound = block.lipschitz_bound()
    for seed in range(2):
        key = jax.random.key(seed)
        fn = lambda x: block(x, key) - block(jnp.zeros_like(x), key)
        assert top_singular_value(dense_matrix(fn, (1, *HW, 2))) <= bound
    streams = [s.lipschitz_bound() for s in block.streams]
    deterministic = HyCASBlock(2, 4, 3, input_hw=HW, stride=2, rani="off", rngs=nnx.Rngs(0))
    base = deterministic.gate.lipschitz_bound([s.lipschitz_bound() for s in deterministic.streams])
    # Stream RANI factor x post-fusion factor: 2 x 2 (paper), 1 x 1 (budgeted), none (off).
    factor = {"per_block": 4.0, "budgeted": 1.0, "off": 1.0}[rani]
    assert bound == pytest.approx(factor * base, rel=1e-6)
    assert max(streams) <= 2.0 * 1.1 if rani == "per_block" else max(streams) <= 1.1


def test_block_output_shape_and_key_splitting():
    block = HyCASBlock(3, 6, 3, input_hw=(8, 8), stride=2, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    y = block(x, jax.random.key(1))
    assert y.shape == (2, 4, 4, 6)
    assert not jnp.allclose(y, block(x, jax.random.key(2)))


def test_block_rejects_unknown_streams_and_placements():
    with pytest.raises(ValueError, match="unknown stream"):
        HyCASBlock(2, 2, input_hw=HW, streams=("sncan", "wavelet"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="RANI placement"):
        HyCASBlock(2, 2, input_hw=HW, rani="everywhere", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="at least one stream"):
        HyCASBlock(2, 2, input_hw=HW, streams=(), rngs=nnx.Rngs(0))


def test_budgeted_block_stays_within_its_budget_whatever_the_gate_learns():
    block = HyCASBlock(2, 4, 3, input_hw=HW, rani="budgeted", rngs=nnx.Rngs(0))
    block.gate.logits[...] = jax.random.normal(jax.random.key(0), block.gate.logits.shape) * 5
    assert block.gate.logits.shape == (3, 1)
    assert block.lipschitz_bound() <= max(s.lipschitz_bound() for s in block.streams) * 1.0001
