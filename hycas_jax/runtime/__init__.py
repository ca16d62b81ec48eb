"""What the command-line tools run on; import the module you need:

- `cli`: the tools' shared flags, `--config.*` overrides and one-line errors;
- `checkpointing`: orbax checkpoints and the run's saved config;
- `records`: the resumable, append-only record log of the evaluations;
- `files`: reading and durably writing files on any `etils.epath` storage;
- `runlock`: one run per workdir or log;
- `distributed`: device meshes, `jax.distributed`, global batches;
- `compilation_cache`: JAX's persistent compilation cache.
"""
__all__ = ["checkpointing", "cli", "compilation_cache", "distributed", "files", "records",
           "runlock"]
