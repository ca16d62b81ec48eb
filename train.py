"""Train a HyCAS model (or a baseline) from a config file.

    python train.py --config configs/mnist.py --workdir runs/mnist
    python train.py --config configs/mnist.py --config.training.sigma=0.5 --workdir runs/s05

Re-running the same command after an interruption resumes from the last
checkpoint in --workdir. Several hosts: run the same command on every host
with --distributed (cluster auto-detected: Cloud TPU, SLURM, Open MPI, ...) or
with --coordinator_address/--num_processes/--process_id; the batch is split
over `config.mesh`'s data axis across all their devices.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hycas_jax import compilation_cache, distributed, training
from hycas_jax.checkpointing import CheckpointError

config_flags.DEFINE_config_file("config", "configs/mnist.py", "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.", required=True)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("distributed", False,
                  "Start jax.distributed with the cluster settings JAX detects itself.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for jax.distributed (or JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Number of processes, for jax.distributed.")
flags.DEFINE_integer("process_id", None, "This process's index, for jax.distributed.")
flags.DEFINE_string("compilation_cache", compilation_cache.default_dir(), compilation_cache.FLAG_HELP)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed)
    try:
        compilation_cache.enable(FLAGS.compilation_cache)
        final = training.train(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress)
    except (CheckpointError, ValueError, FileNotFoundError) as e:  # user errors: one line
        sys.exit("train.py: error: " + " ".join(str(e).split()))
    print("final:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in final.items()))


if __name__ == "__main__":
    app.run(main)
