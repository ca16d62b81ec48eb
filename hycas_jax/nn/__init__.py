"""Primitives with guaranteed Lipschitz bounds, and `freeze`.

Every layer here reports `lipschitz_bound()`, a number guaranteed to be at
least its l2 operator norm (exact SVDs, FFT bounds of convolutions, exact
constants): power iteration only trains, it never enters a bound.
"""
from hycas_jax.nn.activations import ACTIVATIONS, get_activation, group_sort, max_min
from hycas_jax.nn.aol import AOLConv, space_to_depth
from hycas_jax.nn.conv import CONV_FORMS, PlainConv, SNConv, make_conv, power_iterate_all
from hycas_jax.nn.depthwise import depthwise_conv, reverse_mode_only
from hycas_jax.nn.frozen import freeze, is_frozen
from hycas_jax.nn.lipschitz import network_bound
from hycas_jax.nn.normalize import Linear, LipschitzLinear, Normalize
from hycas_jax.nn.orthogonal import OrthogonalMix

__all__ = ["ACTIVATIONS", "AOLConv", "CONV_FORMS", "Linear", "LipschitzLinear",
           "Normalize", "OrthogonalMix", "PlainConv", "SNConv", "depthwise_conv", "freeze", "get_activation", "group_sort", "is_frozen",
           "make_conv", "max_min", "network_bound", "power_iterate_all", "reverse_mode_only",
           "space_to_depth"]
