"""Optimizer and learning-rate schedule from `config.training`."""
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


def make_schedule(cfg) -> optax.Schedule:
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {list(SCHEDULES)}")
    warmup = int(cfg.warmup_steps)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.learning_rate)
    else:
        main = optax.cosine_decay_schedule(cfg.learning_rate, max(1, cfg.num_steps - warmup))
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg) -> optax.GradientTransformation:
    """cfg: the `training` section (optimizer, learning_rate, schedule, warmup_steps,
    num_steps, weight_decay, grad_clip)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {list(OPTIMIZERS)}")
    if cfg.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {cfg.learning_rate}")
    lr = make_schedule(cfg)
    if cfg.optimizer == "adam":
        opt = optax.adam(lr)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
    else:
        opt = optax.sgd(lr, momentum=0.9, nesterov=True)
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt
