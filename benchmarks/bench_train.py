"""Training: images/s of a full step (forward, backward, Adam, power iteration),
ours (`training.train_step`, jitted, state donated) vs the PyTorch
reference (autograd + torch.optim.Adam, NCHW and channels_last)."""
from __future__ import annotations

import common
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch_reference

from hycas_jax.training import train_step


def throughput(name: str, *, batch: int, repeats: int) -> dict:
    config, graphdef, state, tx, model = common.jax_model(name)
    tcfg = config.training
    device = common.torch_reference_device()
    reference = torch_reference.from_jax(model, device)  # copied before the donated state is consumed
    x = common.images(config.model.image_shape, batch)
    y = np.random.default_rng(0).integers(0, config.model.num_classes, batch)
    jax_batch = {"image": jnp.asarray(x), "label": jnp.asarray(y, jnp.int32)}
    step_fn, root_key = train_step(graphdef, tx, tcfg), jax.random.key(0)
    holder = {"state": state}

    def ours():
        holder["state"], metrics = step_fn(holder["state"], jax_batch, root_key)
        jax.block_until_ready(metrics)

    optimizer = torch.optim.Adam(reference.parameters(), lr=tcfg.learning_rate)
    xt = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()).to(device)
    yt = torch.from_numpy(y).to(device)
    xt_cl = xt.contiguous(memory_format=torch.channels_last)
    torch_step = lambda images: (lambda: torch_reference.train_step(
        reference, optimizer, images, yt, sigma=tcfg.sigma, temperature=tcfg.logit_temperature))
    rounds = common.timed_rounds({"ours": ours, "torch_nchw": torch_step(xt),
                                  "torch_channels_last": torch_step(xt_cl)}, repeats)
    t = common.medians(rounds)
    ratio, low, high = common.speedup(rounds, "ours", ("torch_nchw", "torch_channels_last"))
    return {"model": name, "batch": batch, "repeats": repeats,
            "ours_images_per_s": batch / t["ours"],
            "torch_nchw_images_per_s": batch / t["torch_nchw"],
            "torch_channels_last_images_per_s": batch / t["torch_channels_last"],
            "speedup_vs_best_torch": ratio, "speedup_range": [low, high]}
