"""Deterministic Lipschitz baseline on tight kernels: AOL convolutions with
space-to-depth downsampling, MaxMin, the whole feature map into a normalized
head (per-pair margin bounds), trained with the Lipschitz-margin loss."""
from hycas_jax.config import mnist5k, tight_lipschitz


def get_config():
    return tight_lipschitz(mnist5k("lipschitz"))
