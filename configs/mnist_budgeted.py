"""HyCAS with the budgeted RANI placement: the whole network is truly <= 2-Lipschitz
(std = 1, so the input normalization adds no factor), and the margin certificate,
with the paper's Delta / 4 form, is meaningful."""
from hycas_jax.config import mnist5k


def get_config():
    c = mnist5k("hycas", rani="budgeted", std=(1.0,))
    c.certify.logit_bound = 1.0
    return c
