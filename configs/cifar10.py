"""HyCAS ResNet-18 on CIFAR-10 as in the paper. Pass sigma after a colon:
`--config configs/cifar10.py:0.5` (default 0.5; the paper uses 0.25, 0.5, 1.0).

Needs the TFDS `cifar10` dataset prepared as array_record (see README) and an
accelerator; the settings follow the paper's budget (100 epochs).
"""
from hycas_jax.config import cifar


def get_config(sigma: str = "0.5"):
    return cifar("cifar10", float(sigma))
