"""Training: noise-augmented (optionally adversarial) training of any model
built by `hycas_jax.models`, with orbax checkpoints that resume exactly."""
from hycas_jax.training.loop import (
    evaluate_workdir,
    restore_model,
    split_model,
    train,
    train_step,
)
from hycas_jax.training.optim import make_optimizer
from hycas_jax.training.step import make_eval_fn, make_train_step

__all__ = ["evaluate_workdir", "make_eval_fn", "make_optimizer", "make_train_step", "restore_model", "split_model", "train",
           "train_step"]
