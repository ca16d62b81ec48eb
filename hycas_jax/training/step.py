"""The jitted training step, written functionally over `nnx.split` state.

A train state is the pytree {step, params, rest, opt_state}: `params` are the
trainable `nnx.Param`s, `rest` the other model state (power-iteration vectors).
The step's randomness is `fold_in(root_key, step)`, split into one key per
stream (input noise, model, attack), so a resumed run draws exactly what an
uninterrupted one would.

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
from flax import nnx

from hycas_jax import distributed, rng
from hycas_jax.attacks.pgd import pgd_unchecked
from hycas_jax.snc import power_iterate_all
from hycas_jax.streams import reverse_mode_only


def split_model(model: nnx.Module):
    """-> (graphdef, params, rest)."""
    return nnx.split(model, nnx.Param, ...)


def make_logits_fn(graphdef):
    """logits_fn over the pair (params, rest): the library's classifier contract."""
    def logits_fn(state, x, key):
        params, rest = state
        return nnx.merge(graphdef, params, rest)(x, key)
    return logits_fn


def _loss(logits, labels, temperature):
    return optax.softmax_cross_entropy_with_integer_labels(temperature * logits, labels).mean()


def _shardings(mesh):
    """in/out shardings of the step: (state, batch, key) -> (state, metrics)."""
    if mesh is None:
        return {}
    rep = distributed.replicated(mesh)
    return {"in_shardings": (rep, distributed.data_sharded(mesh), rep),
            "out_shardings": (rep, rep)}


def make_train_step(graphdef, tx: optax.GradientTransformation, cfg, mesh=None):
    """cfg: the `training` section. Returns jitted step(state, batch, root_key) -> (state, metrics).

    mesh: None for one device; else batch arrays must be global arrays (or
    host arrays on one process) whose leading axis is split over `data`.
    """
    logits_fn = make_logits_fn(graphdef)
    adv = cfg.adversarial

    def perturb(state, x, y, key):
        if not adv.enabled:
            return x
        out = pgd_unchecked((state["params"], state["rest"]), x, y, key, jnp.float32(adv.eps),
                      jnp.float32(adv.step_size), logits_fn=logits_fn, norm=adv.norm, loss="ce",
                      n_iter=adv.steps, eot_iter=1, random_start=True)
        return jax.lax.stop_gradient(out.x_adv)

    def step(state, batch, root_key):
        key = jax.random.fold_in(root_key, state["step"])
        noise_key, model_key, attack_key = jax.random.split(key, 3)
        x, y = batch["image"], batch["label"]
        x = perturb(state, x, y, attack_key)
        x_noisy = x + cfg.sigma * rng.normal(noise_key, x.shape, x.dtype)

        def loss_fn(params):
            logits = logits_fn((params, state["rest"]), x_noisy, model_key)
            return _loss(logits, y, cfg.logit_temperature), logits

        with reverse_mode_only():
            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        model = nnx.merge(graphdef, params, state["rest"])
        power_iterate_all(model)
        _, params, rest = split_model(model)
        metrics = {"loss": loss, "noisy_accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
                   "grad_norm": optax.tree.norm(grads)}
        new = {"step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}
        return new, metrics

    return jax.jit(step, donate_argnums=0, **_shardings(mesh))


def make_eval_fn(graphdef, mesh=None):
    """Jitted (state, x, y, key, sigma) -> number of correct predictions of one
    stochastic pass on x + N(0, sigma^2); with a mesh, x and y split over `data`."""
    logits_fn = make_logits_fn(graphdef)
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
