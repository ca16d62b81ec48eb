"""HyCAS ResNet-18 on CIFAR-10 as in the paper: all three streams at every convolution,
random crop and flip, 100 epochs. Pass sigma after a colon, and optionally the authors'
notebook's stream schedule after a comma:

    --config configs/cifar10.py:0.5            # sigma 0.5 (default; the paper uses 0.25, 0.5, 1.0)
    --config configs/cifar10.py:0.5,notebook   # FDPAN in stages 1-2, RPFAN in 1-3, stage 4 SNCAN only

Needs the TFDS `cifar10` dataset prepared as array_record (see README) and an accelerator.
"""
from hycas_jax.config import cifar_from_arg


def get_config(arg: str = "0.5"):
    return cifar_from_arg("cifar10", arg)
