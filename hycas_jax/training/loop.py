"""The training loop: data -> jitted step -> metrics, checkpoints, resume.

A run killed at any point and restarted with the same command resumes from
its last checkpoint (model, optimizer, step, input position) and ends in the
same state as an uninterrupted run: step keys are `fold_in(root_key, step)`
and the grain iterator's position is checkpointed with the model.

The run uses the device mesh of `config.mesh` over all processes' devices:
each process reads its own shard of the data, the batch is split over the
`data` axis, the state is replicated (`hycas_jax.runtime.distributed`). Only process
0 writes config, metrics and logs; orbax coordinates checkpoint writes.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from tqdm.auto import tqdm

from hycas_jax import data, models, rng
from hycas_jax.adapter import logits_fn_for
from hycas_jax.attacks.pgd import pgd_unchecked
from hycas_jax.config import data_kwargs
from hycas_jax.data.augment import check_augmentation
from hycas_jax.models.rani import min_mask_sd
from hycas_jax.nn import lipschitz
from hycas_jax.nn.conv import power_iterate_all
from hycas_jax.runtime import checkpointing, distributed, files, runlock
from hycas_jax.training import losses
from hycas_jax.training.metrics import MetricsWriter
from hycas_jax.training.optim import make_optimizer, make_schedule
from hycas_jax.training.step import make_eval_fn, make_train_step

LOCK_FILE = ".train.lock"


def _keys(seed: int, impl: str = rng.DEFAULT_IMPL):
    """-> (model init key, training-step root key, logging-eval key)."""
    return tuple(jax.random.split(rng.key(seed, impl), 3))


def _dataset_info(config):
    """The test split's info; a data set that does not match config.model is a ValueError."""
    return data.get_source(config.dataset.name, "test", **data_kwargs(config))[1]


def make_mesh(config):
    """The config's device mesh ({'data': -1} when the config has no `mesh`)."""
    return distributed.make_mesh(config.get("mesh", None) or {distributed.DATA: -1})


def initial_state(config, mesh=None):
    """Builds the model and the train state it starts from. -> (graphdef, state, tx).

    With a mesh, the state is replicated on it; every process builds the same
    state from the same seed.
    """
    init_key, _, _ = _keys(config.training.seed, rng.config_impl(config))
    model = models.build(config.model, key=init_key)
    graphdef, params, rest = split_model(model)
    tx = make_optimizer(config.training)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
             "opt_state": tx.init(params)}
    if mesh is not None:
        state = distributed.replicate(state, mesh)
    return graphdef, state, tx


def split_model(model: nnx.Module):
    """-> (graphdef, params, rest): the trainable `nnx.Param`s and the other state."""
    return nnx.split(model, nnx.Param, ...)


def model_from_state(graphdef, state) -> nnx.Module:
    return nnx.merge(graphdef, state["params"], state["rest"])


def train_step(graphdef, tx, tcfg, mesh=None):
    """`make_train_step` for a model of this library: its logits (fast reverse-mode
    gradients), PGD when `tcfg.adversarial` is on, and the SNCs' power iteration."""
    return make_train_step(logits_fn_for(graphdef, reverse_mode=True), tx, tcfg, mesh,
                           perturb=_adversary(graphdef, tcfg.adversarial),
                           refresh=_power_iteration(graphdef))


def _power_iteration(graphdef):
    """The step's refresh: one power iteration of every SNC (training's norm estimate)."""
    def refresh(params, rest):
        model = nnx.merge(graphdef, params, rest)
        power_iterate_all(model)
        _, params, rest = split_model(model)
        return params, rest
    return refresh


def _adversary(graphdef, adv):
    """PGD against the model as trained (adversarial training), or None."""
    if not adv.enabled:
        return None
    logits_fn = logits_fn_for(graphdef)

    def perturb(params, x, y, key):
        return pgd_unchecked(params, x, y, key, jnp.float32(adv.eps), jnp.float32(adv.step_size),
                             logits_fn=logits_fn, norm=adv.norm, loss="ce", n_iter=adv.steps,
                             eot_iter=1, random_start=True).x_adv
    return perturb


def _model_metrics(graphdef, state) -> dict:
    """The guaranteed bound and, for a model with RANI, `rani/min_mask_sd`: the smallest
    per-channel standard deviation of a RANI mask over its noise (what noise is left)."""
    model = model_from_state(graphdef, distributed.local_copy(state))
    out = {"lipschitz_bound": lipschitz.network_bound(model)}
    sd = min_mask_sd(model)
    if not math.isnan(sd):
        out["rani/min_mask_sd"] = sd
    return out


def _eval_batch_size(mesh) -> int:
    """256 rounded up to a multiple of the data axis and the process count; the
    same on every mesh that divides 256, so such meshes draw the same noise."""
    parts = int(np.lcm(mesh.shape[distributed.DATA], jax.process_count()))
    return -(-256 // parts) * parts


def evaluate(config, graphdef, state, *, split="test", max_examples=None, seed=0,
             mesh=None, sigma: Optional[float] = None) -> dict:
    """Clean and noisy accuracy of one stochastic pass over a split.

    sigma: the input noise of the noisy pass (default: the training sigma; give one to
    compare models trained with and without noise at the same level).
    mesh: where `state` lives (None: one device); each process reads its
    share of every batch.
    """
    noisy_sigma = config.training.sigma if sigma is None else float(sigma)
    mesh = mesh or distributed.make_mesh({distributed.DATA: 1}, jax.devices()[:1])
    correct_fn = make_eval_fn(logits_fn_for(graphdef), mesh)
    key = rng.key(seed, rng.config_impl(config))
    totals = {"clean": 0, "noisy": 0}
    count = 0
    for i, batch in enumerate(data.eval_batches(config.dataset.name, split,
                                                batch_size=_eval_batch_size(mesh),
                                                max_examples=max_examples, **data_kwargs(config))):
        mask = np.asarray(batch["mask"])
        local = {"x": batch["image"], "y": np.where(mask, batch["label"], -1), "mask": mask}
        g = distributed.global_batch(local, mesh)
        for name, level in (("clean", 0.0), ("noisy", noisy_sigma)):
            totals[name] += int(correct_fn(state, g["x"], g["y"], jax.random.fold_in(key, i), level))
        count += int(jnp.sum(g["mask"]))
    return {f"test_{k}_accuracy": v / max(count, 1) for k, v in totals.items()}


def train(config, workdir: str, *, progress: bool = True) -> dict:
    """Trains (or resumes) the run in `workdir`. Returns the final metrics."""
    # Checked before anything is written, so a fixed command can reuse the workdir.
    _dataset_info(config)
    models.validate(config.model)
    check_augmentation(config.training.get("augment", "none"))
    losses.check_loss(losses.config_loss(config.training))
    rng.config_impl(config)
    files.path(workdir).mkdir(parents=True, exist_ok=True)
    with runlock.exclusive(os.path.join(workdir, LOCK_FILE), f"workdir {workdir}"):
        return _train(config, workdir, progress=progress)


def _train(config, workdir: str, *, progress: bool) -> dict:
    if jax.process_index() == 0:
        checkpointing.save_config(workdir, config)
    tcfg = config.training
    mesh = make_mesh(config)
    distributed.check_divisible(tcfg.batch_size, mesh, "training.batch_size")
    graphdef, state, tx = initial_state(config, mesh)
    _, train_key, log_key = _keys(tcfg.seed, rng.config_impl(config))
    ckpt = checkpointing.Checkpointer(workdir, max_to_keep=tcfg.keep_checkpoints)
    it = data.train_iterator(config.dataset.name, batch_size=tcfg.batch_size, seed=tcfg.seed,
                             **data_kwargs(config))
    resumed, state, _, corrupt = ckpt.restore_newest_intact(state, iterator=it)
    for bad in corrupt:  # nothing is deleted: the unreadable steps are moved aside
        logging.warning("checkpoint step %d in %s is corrupt; resuming from step %d instead "
                        "(its files moved to %s)", bad, ckpt.directory, resumed or 0,
                        ckpt.set_aside(bad))
    step_fn = train_step(graphdef, tx, tcfg, mesh)
    eval_fn = make_eval_fn(logits_fn_for(graphdef), mesh)
    schedule = make_schedule(tcfg)
    start = int(state["step"])
    writer = MetricsWriter(workdir, start_step=start)
    bar = tqdm(total=tcfg.num_steps, initial=start, desc="train",
               disable=not progress or jax.process_index() != 0, dynamic_ncols=True)
    # The margin losses' offset scales with the model's guaranteed bound, refreshed at
    # every log step (and here, so a resumed run starts from its checkpoint's bound).
    lipschitz = _lipschitz_for_loss(graphdef, state, tcfg)
    for step in range(start, tcfg.num_steps):
        batch = distributed.global_batch(next(it), mesh)
        state, metrics = step_fn(state, batch, train_key, lipschitz)
        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.num_steps:
            metrics = {k: float(v) for k, v in metrics.items()}
            clean = eval_fn(state, batch["image"], batch["label"], jax.random.fold_in(log_key, done), 0.0)
            metrics["clean_accuracy"] = float(clean) / batch["label"].shape[0]
            metrics.update(_model_metrics(graphdef, state))
            if losses.config_loss(tcfg) != "ce":
                lipschitz = np.float32(metrics["lipschitz_bound"])
            metrics["learning_rate"] = float(schedule(step))
            writer.write(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['noisy_accuracy']:.2f}",
                            L=f"{metrics['lipschitz_bound']:.3g}")
        if done % tcfg.checkpoint_every == 0 or done == tcfg.num_steps:
            ckpt.save(done, state, {"key": np.asarray(jax.random.key_data(train_key)).tolist()},
                      iterator=it)
        bar.update(1)
    bar.close()
    ckpt.wait()
    ckpt.close()
    final = evaluate(config, graphdef, state, mesh=mesh)
    final.update(_model_metrics(graphdef, state))
    final["step"] = int(state["step"])
    writer.write(final["step"], final, final=True)
    writer.close()
    if jax.process_index() == 0:
        files.replace_bytes(files.path(workdir) / "final_metrics.json",
                            json.dumps(final, indent=2).encode())
    return final


def _lipschitz_for_loss(graphdef, state, tcfg) -> np.float32:
    if losses.config_loss(tcfg) == "ce":
        return np.float32(1.0)  # unused by cross-entropy; no bound computed
    return np.float32(_model_metrics(graphdef, state)["lipschitz_bound"])


def evaluate_workdir(workdir: str, *, split: str = "test", step: Optional[int] = None,
                     max_examples: Optional[int] = None, seed: int = 0,
                     sigma: Optional[float] = None) -> dict:
    """`evaluate` of a trained workdir's checkpoint (default: the latest) on `split`, e.g.
    'holdout' for a run configured with `dataset.holdout`; the noisy pass at `sigma`
    (default: the run's training sigma). Returns
    {'<split>_clean_accuracy', '<split>_noisy_accuracy', 'step'}."""
    config = checkpointing.restore_config(workdir)
    graphdef, state, _ = initial_state(config)
    ckpt = checkpointing.Checkpointer(workdir, create=False)
    try:
        state, _ = ckpt.restore(state, step)
    finally:
        ckpt.close()
    out = evaluate(config, graphdef, state, split=split, max_examples=max_examples, seed=seed,
                   sigma=sigma)
    return {**{k.replace("test_", f"{split}_", 1): v for k, v in out.items()},
            "step": int(state["step"])}


def restore_model(workdir: str, step: Optional[int] = None, mesh=None):
    """Loads a trained model from a workdir written by `train`.

    Returns (model, config, step); with a mesh, the model's arrays are
    replicated on it (needed to use it on a multi-process mesh). Raises
    CheckpointError for a missing or corrupt workdir/checkpoint.
    """
    config = checkpointing.restore_config(workdir)
    graphdef, state, _ = initial_state(config, mesh)
    ckpt = checkpointing.Checkpointer(workdir, create=False)
    try:
        state, _ = ckpt.restore(state, step)
    finally:
        ckpt.close()
    return model_from_state(graphdef, state), config, int(state["step"])
