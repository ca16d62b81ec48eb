"""The HyCAS block: the drop-in replacement for one convolution.

Streams (each ending in RANI) -> per-channel convex gate -> post-fusion RANI.
RANI placement (`rani`):

* ``"per_block"``: the paper's `I + diag(M)` in every stream and after the
  gate. Honest bound of one block: gate(2 * L_streams) * 2.
* ``"budgeted"``: the non-expansive form `(I + diag(M)) / 2` everywhere inside
  blocks, and a gate with one weight per stream (a per-channel gate can expand
  by up to sqrt(#streams), see gate.py); the network adds one `I + diag(M)` at
  its end, so a stack of blocks is <= 2-Lipschitz overall, times
  normalization, head, and the SNCs' power-iteration slack (all counted).
* ``"final"``: no RANI inside blocks, the stream-weight gate of "budgeted", and
  one `I + diag(M)` at the network's end: the same <= 2 budget spent once.
  Every averaged RANI passes on only (1 + E[M]) / 2 of the signal on average
  while its bound is 1, so a stack of them dissipates what the margin needs;
  here the blocks' randomness is RPFAN's random filters, and the bound of the
  blocks is what their convolutions really do.
* ``"off"``: no RANI (deterministic Lipschitz baseline).
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from hycas_jax.models.fdpan import FDPAN
from hycas_jax.models.gate import ConvexGate
from hycas_jax.models.rani import RANI
from hycas_jax.models.rpfan import DEFAULT_RANDOM_WEIGHT, RPFAN
from hycas_jax.models.sncan import SNCAN

STREAMS = {"sncan": SNCAN, "fdpan": FDPAN, "rpfan": RPFAN}

RANI_PLACEMENTS = {"per_block": "residual", "budgeted": "averaged", "final": None, "off": None}
# Placements whose network adds one I + diag(M) after its last block (models/base.py).
FINAL_RANI = ("budgeted", "final")


def check_streams(streams: Sequence[str]) -> None:
    if not streams:
        raise ValueError("a HyCAS block needs at least one stream")
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        raise ValueError(f"unknown stream(s) {unknown}; known: {sorted(STREAMS)}")


GATES = ("learned", "uniform")


def check_gate(gate: str) -> None:
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; known: {list(GATES)}")


def check_rani(rani: str) -> None:
    if rani not in RANI_PLACEMENTS:
        raise ValueError(f"unknown RANI placement {rani!r}; known: {sorted(RANI_PLACEMENTS)}")


class HyCASBlock(nnx.Module):
    """(B, H, W, c_in) -> (B, H/stride, W/stride, c_out); call as block(x, key)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 input_hw: Sequence[int], stride: int = 1,
                 streams: Sequence[str] = ("sncan", "fdpan", "rpfan"),
                 rani: str = "per_block", dct_keep: float = 0.5, gate: str = "learned",
                 rani_spread: str = "floored", rani_noise: str = "normal", rpfan: str = "mixed",
                 rpfan_random_weight: float = DEFAULT_RANDOM_WEIGHT, conv: str = "snc",
                 rngs: nnx.Rngs):
        check_streams(streams)
        check_rani(rani)
        check_gate(gate)
        form = RANI_PLACEMENTS[rani]
        self.stream_names = tuple(streams)
        built = []
        for name in streams:
            kwargs = dict(input_hw=input_hw, stride=stride, rani=form, rani_spread=rani_spread,
                          rani_noise=rani_noise,
                          conv=conv, rngs=rngs)
            if STREAMS[name] is FDPAN:
                kwargs["dct_keep"] = dct_keep
            if STREAMS[name] is RPFAN:
                kwargs.update(form=rpfan, random_weight=rpfan_random_weight)
            built.append(STREAMS[name](in_channels, out_channels, kernel_size, **kwargs))
        self.streams = nnx.List(built)
        self.gate = ConvexGate(len(built), out_channels, per_channel=rani not in FINAL_RANI,
                               learned=gate == "learned", rngs=rngs)
        self.post_rani = RANI(out_channels, form, spread=rani_spread,
                               noise=rani_noise, rngs=rngs) if form else None

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, len(self.streams) + 1)
        outs = []
        for name, stream, k in zip(self.stream_names, self.streams, keys[:-1]):
            with jax.named_scope(name):
                outs.append(stream(x, k))
        with jax.named_scope("gate"):
            fused = self.gate(outs)
        if self.post_rani is None:
            return fused
        with jax.named_scope("post_rani"):
            return self.post_rani(fused, keys[-1])

    def lipschitz_bound(self) -> float:
        bound = self.gate.lipschitz_bound([s.lipschitz_bound() for s in self.streams])
        return bound * (1.0 if self.post_rani is None else self.post_rani.lipschitz_bound())
