"""HyCAS ResNet-18 on CIFAR-100 as in the paper; the arguments are those of
configs/cifar10.py (`--config configs/cifar100.py:0.5` or `:0.5,notebook`). Needs the TFDS
`cifar100` dataset prepared as array_record (see README).
"""
from hycas_jax.config import cifar_from_arg


def get_config(arg: str = "0.5"):
    return cifar_from_arg("cifar100", arg)
