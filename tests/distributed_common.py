"""The runs that tests/test_distributed.py compares, shared by the test and
its subprocess worker (importing this starts nothing)."""
import jax
import numpy as np
from flax import nnx
from tiny_config import get_config

import hycas_jax
from hycas_jax import data, training
from hycas_jax.certification import smoothing

NUM_STEPS = 3
CERTIFY = dict(n0=20, n=200, alpha=1e-3, batch_size=16)  # 13 chunks: uneven over the devices
CERTIFY_RUN = dict(n0=20, n=200, batch_size=16, margin_samples=48, max_examples=3)
ATTACK_RUN = dict(eps=(0.0, 0.1), n_iter=2, eot_iter=1, max_examples=4, batch_size=4,
                  attacks=("apgd-ce",), rules=("single",), repeats=2)


def config(mesh_data: int = -1):
    """The tiny HyCAS config, trained for NUM_STEPS steps on a `mesh_data`-device data axis."""
    c = get_config()
    c.training.num_steps = NUM_STEPS
    c.training.log_every = c.training.checkpoint_every = NUM_STEPS
    c.mesh.data = mesh_data
    return c


def leaves(model) -> dict:
    return {f"param{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(nnx.state(model)))}


def certify_images(model, num_classes: int, sigma: float, mesh) -> dict:
    """CERTIFY on the first 3 test images, key fold_in(key(7), i) for image i."""
    logits_fn, params = hycas_jax.functional(model)
    batch = next(data.eval_batches("digits8x8", batch_size=3, process_index=0, process_count=1))
    out = {}
    for i, x in enumerate(batch["image"]):
        key = jax.random.fold_in(jax.random.key(7), i)
        r = smoothing.certify(logits_fn, params, x[None], key, num_classes=num_classes,
                              sigma=sigma, mesh=mesh, **CERTIFY)
        for name in ("prediction", "radius", "counts_selection", "counts"):
            out[f"{name}{i}"] = getattr(r, name)
    return out


def certify_workdir(workdir, mesh=None) -> dict:
    model, cfg, _ = training.restore_model(workdir, mesh=mesh)
    return certify_images(model, cfg.model.num_classes, cfg.certify.sigma, mesh)
