"""The jitted training step, written functionally over `nnx.split` state.

A train state is the pytree {step, params, rest, opt_state}: `params` are the
trainable parameters, `rest` the other model state (power-iteration vectors).
The step's randomness is `fold_in(root_key, step)`, split into one key per
stream (input noise, model, attack; augmentation, when the config asks for it,
folds in its own), so a resumed run draws exactly what an uninterrupted one
would.

With a mesh, the step is one jit over the whole mesh: the batch split over
the `data` axis, the state replicated, and XLA inserting the gradient
all-reduce. Noise is drawn for the global batch shape (threefry is
partitionable), so example i gets the same noise on any number of devices.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from hycas_jax import rng
from hycas_jax.data.augment import augment
from hycas_jax.runtime import distributed
from hycas_jax.training import losses

_AUGMENT_STREAM = 0xA6  # fold_in index of the augmentation's key


def _shardings(mesh):
    """in/out shardings of the step: (state, batch, key, lipschitz) -> (state, metrics)."""
    if mesh is None:
        return {}
    rep = distributed.replicated(mesh)
    return {"in_shardings": (rep, distributed.data_sharded(mesh), rep, rep),
            "out_shardings": (rep, rep)}


def make_train_step(logits_fn, tx: optax.GradientTransformation, cfg, mesh=None, *,
                    perturb=None, refresh=None):
    """Jitted step(state, batch, root_key, lipschitz=1.0) -> (state, metrics) of
    noise-augmented (and, with `perturb`, adversarial) training. `lipschitz`: the
    model's current guaranteed bound, which the margin losses scale their offset by
    (`hycas_jax.training.losses`; cross-entropy ignores it).

    logits_fn: `(params, x, key) -> logits`, with params the pair (params, rest).
    cfg: the `training` section. perturb: `(model_params, x, y, key) -> x'`, the
    adversarial examples to train on (None: the clean batch). refresh:
    `(params, rest) -> (params, rest)` after each update (e.g. the model's
    power-iteration state). mesh: None for one device; else batch arrays must be
    global arrays (or host arrays on one process) whose leading axis is split over
    `data`.
    """
    def step(state, batch, root_key, lipschitz=1.0):
        key = jax.random.fold_in(root_key, state["step"])
        noise_key, model_key, attack_key = jax.random.split(key, 3)
        x, y = batch["image"], batch["label"]
        augmentation = cfg.get("augment", "none")  # a run saved before the option: none
        if augmentation != "none":  # its own key: the others stay as without augmentation
            x = augment(augmentation, jax.random.fold_in(key, _AUGMENT_STREAM), x)
        if perturb is not None:
            x = jax.lax.stop_gradient(perturb((state["params"], state["rest"]), x, y, attack_key))
        x_noisy = x + cfg.sigma * rng.normal(noise_key, x.shape, x.dtype)

        def loss_fn(params):
            logits = logits_fn((params, state["rest"]), x_noisy, model_key)
            return losses.loss(logits, y, cfg, lipschitz), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        rest = state["rest"]
        if refresh is not None:
            params, rest = refresh(params, rest)
        metrics = {"loss": loss, "noisy_accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
                   "grad_norm": optax.tree.norm(grads)}
        new = {"step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}
        return new, metrics

    return jax.jit(step, donate_argnums=0, **_shardings(mesh))


def make_eval_fn(logits_fn, mesh=None):
    """Jitted (state, x, y, key, sigma) -> number of correct predictions of one
    stochastic pass on x + N(0, sigma^2); with a mesh, x and y split over `data`.
    logits_fn as `make_train_step`'s."""
    shardings = {}
    if mesh is not None:
        rep, split = distributed.replicated(mesh), distributed.data_sharded(mesh)
        shardings = {"in_shardings": (rep, split, split, rep, rep), "out_shardings": rep}

    @functools.partial(jax.jit, **shardings)
    def correct(state, x, y, key, sigma):
        noise_key, model_key = jax.random.split(key)
        x = x + sigma * rng.normal(noise_key, x.shape, x.dtype)
        logits = logits_fn((state["params"], state["rest"]), x, model_key)
        return jnp.sum(jnp.argmax(logits, -1) == y)

    return correct
