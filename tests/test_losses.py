"""The training losses: cross-entropy and the margin-aware forms."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from hycas_jax.training import losses


def cfg(**kw):
    base = {"loss": "ce", "logit_temperature": 2.0, "margin_eps": 0.5}
    base.update(kw)
    return ml_collections.ConfigDict(base)


LOGITS = jnp.array([[1.0, 0.5, -0.2], [0.1, 0.3, 0.2]])
LABELS = jnp.array([0, 2])


def test_cross_entropy_is_tempered_and_ignores_the_bound():
    expected = optax.softmax_cross_entropy_with_integer_labels(2.0 * LOGITS, LABELS).mean()
    for lipschitz in (1.0, 7.0):
        assert losses.loss(LOGITS, LABELS, cfg(), lipschitz) == pytest.approx(float(expected))


def test_lipschitz_margin_raises_the_other_logits_by_the_certificate_offset():
    lipschitz = 3.0
    offset = math.sqrt(2.0) * 0.5 * lipschitz
    shifted = LOGITS + offset * (1.0 - jax.nn.one_hot(LABELS, 3))
    expected = optax.softmax_cross_entropy_with_integer_labels(2.0 * shifted, LABELS).mean()
    got = losses.loss(LOGITS, LABELS, cfg(loss="lipschitz_margin"), lipschitz)
    assert got == pytest.approx(float(expected))
    # eps = 0 is plain cross-entropy.
    assert losses.loss(LOGITS, LABELS, cfg(loss="lipschitz_margin", margin_eps=0.0), 3.0) == \
        pytest.approx(float(losses.loss(LOGITS, LABELS, cfg(), 3.0)))


def test_hinge_counts_each_unmet_margin_once():
    c = cfg(loss="hinge", margin_ce_weight=0.0)
    offset = math.sqrt(2.0) * 0.5 * 1.0
    z = np.asarray(LOGITS, np.float64)
    expected = np.mean([sum(max(0.0, offset - (z[i, y] - z[i, j])) for j in range(3) if j != y)
                        for i, y in enumerate([0, 2])])
    assert losses.loss(LOGITS, LABELS, c, 1.0) == pytest.approx(expected, rel=1e-6)
    # Margins far above the offset cost nothing.
    wide = jnp.array([[10.0, 0.0, 0.0]])
    assert float(losses.loss(wide, jnp.array([0]), c, 1.0)) == 0.0


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown training loss 'focal'"):
        losses.check_loss("focal")
