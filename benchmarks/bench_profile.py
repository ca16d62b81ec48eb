"""Where certification time goes.

`rng_share`: every RANI draws one standard normal per feature, and the input
noise one per pixel. This times a jitted chunk that draws exactly those normals
(shapes recorded from the model's own trace) against the full noisy forward
chunk, interleaved; the normals are drawn both with `hycas_jax.rng.normal`
(what the model uses) and with `jax.random.normal` (the same numbers, JAX's
CPU lowering).

`op_times`: a jax.profiler trace of the certification chunk, each compiled op's
device time (CPU thunks, or GPU kernels) attributed to the model component
that the named scopes in `hycas_jax` give it (unit1/fdpan/lowpass, ...).
"""
from __future__ import annotations

import collections
import contextlib
import glob
import math
import re
import tempfile

import common
import jax
import jax.numpy as jnp

from hycas_jax import freeze, functional, rng
from hycas_jax.certification import montecarlo

DRAWS = ("normal", "quantile16")  # the hycas_jax.rng functions a model draws with
CONSTANT = "constant"  # the omega form `constant_omega` adds


@contextlib.contextmanager
def constant_omega():
    """Inside the block a model config may name `rani_noise = CONSTANT`: RANI's omega is
    then 0 (a function of the key's data, so nothing is folded away), and the model
    draws no internal random numbers. For timing only: the floor the internal noise's
    cost sits on. Build and first run (trace) such a model inside the block."""
    noises, draw = rng.NOISES, rng.internal_normal

    def internal_normal(key, shape, noise="normal"):
        if noise != CONSTANT:
            return draw(key, shape, noise)
        tiny = jax.random.key_data(key).ravel()[0].astype(jnp.float32) * 0.0
        return jnp.full(shape, tiny, jnp.float32)

    rng.NOISES, rng.internal_normal = noises + (CONSTANT,), internal_normal
    try:
        yield
    finally:
        rng.NOISES, rng.internal_normal = noises, draw


@contextlib.contextmanager
def recorded_draws(draws: list):
    """Appends (shape, form) of every `hycas_jax.rng.normal` / `quantile16` call made
    inside the block."""
    originals = {form: getattr(rng, form) for form in DRAWS}

    def recording(form):
        def record(key, shape=(), *args, **kwargs):
            draws.append((tuple(shape), form))
            return originals[form](key, shape, *args, **kwargs)
        return record

    for form in DRAWS:
        setattr(rng, form, recording(form))
    try:
        yield draws
    finally:
        for form, draw in originals.items():
            setattr(rng, form, draw)


def draw_shapes(logits_fn, params, image) -> list:
    """(shape, form) of every random draw one noisy forward pass of `image` makes: the
    input noise first (exact normals), then each draw of the model in its form."""
    with recorded_draws([]) as draws:  # a fresh function: a cached trace would record nothing
        jax.eval_shape(lambda p, x, k: logits_fn(p, x, k), params, image, jax.random.key(0))
    return [(image.shape, "normal")] + draws


def normals_only(draws, normal=rng.normal):
    """A jitted function of a batch of keys drawing, for each key, exactly the values of
    `draws` ((shape, form) pairs; form 'normal' with `normal`) and returning them: the
    random-number work of a Monte Carlo chunk without the model, plus one write per
    value (as the model's RANI output costs; a reduction instead would time XLA's
    CPU reductions, slower than the draws)."""
    fns = {"normal": normal, "quantile16": rng.quantile16}

    def run(keys):
        one = lambda k: [fns[form](jax.random.fold_in(k, i), s) for i, (s, form) in enumerate(draws)]
        return jax.vmap(one)(keys)
    return jax.jit(run)


def rng_share(name: str, *, chunk: int, repeats: int) -> dict:
    config, _, _, _, model = common.jax_model(name)
    logits_fn, params = functional(freeze(model))  # as certify.py runs it
    image = jnp.asarray(common.images(config.model.image_shape, 1))
    draws = draw_shapes(logits_fn, params, image)

    def forward(params, keys):
        one = lambda k: logits_fn(params, image + 0.25 * rng.normal(k, image.shape), k)
        return jax.vmap(one)(keys)

    keys = jax.random.split(jax.random.key(1), chunk)
    forward, ours, jaxs = jax.jit(forward), normals_only(draws), normals_only(draws, jax.random.normal)
    t = common.interleaved({"forward": lambda: forward(params, keys).block_until_ready(),
                            "normals": lambda: jax.block_until_ready(ours(keys)),
                            "jax_normals": lambda: jax.block_until_ready(jaxs(keys))}, repeats)
    per_sample = sum(math.prod(s) for s, _ in draws)
    return {"model": name, "chunk": chunk, "normals_per_sample": per_sample,
            "quantile16_per_sample": sum(math.prod(s) for s, form in draws if form == "quantile16"),
            "forward_s": t["forward"], "normals_s": t["normals"],
            "rng_share_of_forward": t["normals"] / t["forward"],
            "ns_per_normal": t["normals"] / (chunk * per_sample) * 1e9,
            "jax_random_ns_per_normal": t["jax_normals"] / (chunk * per_sample) * 1e9}


def _certification_pass(name: str, chunk: int, rounds: int, sigma: float = 0.25):
    """The jitted Monte Carlo pass certification runs (`rounds` chunks of `chunk`
    samples of one image, as `montecarlo.sample_stats` calls it), and its arguments.
    Profiling the real pass counts what XLA hoists out of the chunk loop (the
    parameters' orthogonal matrices and normalized kernels) once, as it runs."""
    config, _, _, _, model = common.jax_model(name)
    logits_fn, params = functional(freeze(model))  # as certify.py runs it
    image = jnp.asarray(common.images(config.model.image_shape, 1))
    num = chunk * rounds
    static = dict(num_classes=config.model.num_classes, split=num, num=num, chunk_size=chunk)
    fn = jax.jit(lambda params, keys, sigma, bound: montecarlo.counting_pass(
        logits_fn, params, image, keys, sigma, bound, **static))
    return fn, (params, jax.random.key(1)[None], jnp.float32(sigma), jnp.float32(jnp.inf))


_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"')
# Control flow: a trace's event for one of these spans the ops run inside it.
_CONTAINER = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?(?<![\w-])(?:while|conditional|call)\(')
_VMAPPED_SCOPE = re.compile(r"^vmap\((\w+)\)$")  # vmap takes the name of the scope just inside it
_NOT_A_SCOPE = {"while", "body", "cond", "closed_call"}


def scope_of(op_name: str) -> str:
    """The named-scope path of an op:
    'jit(run)/vmap(unit1)/fdpan/lowpass/jit(einsum)/dot_general' -> 'unit1/fdpan/lowpass'.

    Transformations (jit(...), jvp(...)), Python qualnames, einsum specs and
    control-flow parts are dropped."""
    parts = []
    for part in op_name.split("/")[:-1]:  # the last part is the primitive
        vmapped = _VMAPPED_SCOPE.match(part)
        if vmapped:
            parts.append(vmapped.group(1))
        elif part and part not in _NOT_A_SCOPE and not re.search(r"[(.,\->]", part):
            parts.append(part)
    return "/".join(parts) or "(unscoped)"


def _device_events(path: str, module: str):
    """(op name, duration ns) of each compiled op run in the trace: the kernels on
    the device planes (GPU/TPU; the "XLA Ops" line, else events naming their HLO
    op), else the CPU thunks of `module`."""
    data = jax.profiler.ProfileData.from_file(path)
    devices = [p for p in data.planes if p.name.startswith(("/device:GPU", "/device:TPU"))]
    found = False
    for plane in devices:
        for line in plane.lines:
            if line.name == "XLA Ops":
                found = True
                yield from ((e.name, e.duration_ns) for e in line.events)
    if found:
        return
    for plane in devices or data.planes:
        for line in plane.lines:
            if line.name in ("XLA Modules", "Steps", "Launch Stats"):
                continue
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" in stats and module in str(stats.get("hlo_module", module)):
                    yield str(stats["hlo_op"]), event.duration_ns


def trace_layout(path: str) -> dict:
    """{plane: {line: event count}} of a trace (to see what a backend records)."""
    data = jax.profiler.ProfileData.from_file(path)
    return {p.name: {l.name: sum(1 for _ in l.events) for l in p.lines} for p in data.planes}


def op_times(name: str, *, chunk: int, rounds: int = 4, repeats: int = 3, top: int = 12,
             trace_dir: str | None = None) -> dict:
    """Device time of certification's Monte Carlo pass, per model component and per op,
    in ms per chunk of `chunk` samples (a pass of `rounds` chunks is traced).

    Time is summed over the compiled ops' own durations (on the CPU, ops on
    different threads overlap, so the sum can exceed the wall time); `share`
    is of that sum. `component` is the innermost named scope (rani, snc,
    lowpass, ...), summed over units; `scope` the full path. A fusion counts
    under the scope of its root op: the post-fusion RANI's fusion, for
    example, also computes the streams' RANI masks and the gate that feed it.
    Control flow (while, conditional, call) is left out: its events span the
    ops run inside it, which have events of their own.
    """
    fn, args = _certification_pass(name, chunk, rounds)
    compiled = fn.lower(*args).compile()
    memory = compiled.memory_analysis()
    scopes, containers = {}, set()
    for line in compiled.as_text().splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            scopes[match.group(1)] = scope_of(match.group(2))
        match = _CONTAINER.match(line)
        if match:
            containers.add(match.group(1))
    run = lambda: jax.block_until_ready(compiled(*args))
    run()
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="hycas_trace_")
    with jax.profiler.trace(trace_dir):
        for _ in range(repeats):
            run()
    paths = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))
    if not paths:
        raise RuntimeError(f"jax.profiler wrote no trace under {trace_dir}")
    per_op = collections.defaultdict(float)
    for op, ns in _device_events(paths[-1], "jit_"):
        if op not in containers:  # their time is that of the ops inside, counted already
            per_op[op] += ns / (repeats * rounds) / 1e6
    if not per_op:
        raise RuntimeError(f"no compiled-op events in the trace {paths[-1]}; its planes and "
                           f"lines: {trace_layout(paths[-1])}")
    total = sum(per_op.values())
    by_scope, by_component = collections.defaultdict(float), collections.defaultdict(float)
    for op, ms in per_op.items():
        scope = scopes.get(op, "(unscoped)")
        by_scope[scope] += ms
        by_component[scope.split("/")[-1]] += ms

    def rows(table, key, limit=None):
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [{key: k, "ms": ms, "share": ms / total} for k, ms in ranked]

    top_ops = rows(per_op, "op", top)
    for row in top_ops:
        row["scope"] = scopes.get(row["op"], "(unscoped)")
    return {"model": name, "chunk": chunk, "rounds": rounds, "device": str(jax.devices()[0]),
            "op_ms_per_chunk": total, "ops": len(per_op), "trace": paths[-1],
            "temp_mb": getattr(memory, "temp_size_in_bytes", 0) / 2 ** 20,
            "by_component": rows(by_component, "component"),
            "by_scope": rows(by_scope, "scope", top), "top_ops": top_ops}


def main():
    """Prints `op_times` as JSON. run.py starts this in a fresh process with XLA's GPU
    command buffers off: a command buffer (a CUDA graph) shows in a trace as one op,
    hiding which kernels it ran."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="device time per model component")
    parser.add_argument("--model", default="small_cnn 28x28x1", choices=sorted(common.CONFIGS))
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = op_times(args.model, chunk=args.chunk, rounds=args.rounds)
    result.pop("trace")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
