"""PGD adversarial-training baseline (Madry et al.) on the plain CNN, linf eps 0.1."""
from hycas_jax.config import mnist5k


def get_config():
    c = mnist5k("plain", sigma=0.0)
    c.training.adversarial.enabled = True
    c.certify.sigma = 0.25  # certify the smoothed classifier at the others' sigma
    c.certify.margin = False
    return c
