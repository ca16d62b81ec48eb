"""Train a HyCAS model (or a baseline) from a config file.

    python train.py --config configs/mnist.py --workdir runs/mnist
    python train.py --config configs/mnist.py --config.training.sigma=0.5 --workdir runs/s05

Re-running the same command after an interruption resumes from the last
checkpoint in --workdir. Several hosts: run the same command on every host
with --distributed (cluster auto-detected: Cloud TPU, SLURM, Open MPI, ...) or
with --coordinator_address/--num_processes/--process_id; the batch is split
over `config.mesh`'s data axis across all their devices.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hycas_jax import compilation_cache, distributed, training
from hycas_jax.checkpointing import CheckpointError

QUOTES = "'\""


def _error(message) -> None:
    sys.exit("train.py: error: " + " ".join(str(message).split()))


def _no_field(error: AttributeError) -> None:
    """ml_collections' AttributeError for an override of a field the config lacks."""
    _error(f"--config override: the config has no field {str(error).strip(QUOTES)!r}")


try:  # ml_collections resolves the --config.* overrides in sys.argv here, against the default file
    config_flags.DEFINE_config_file("config", "configs/mnist.py", "Experiment config file.",
                                    lock_config=True)
except AttributeError as e:  # an override of a field the config lacks
    _no_field(e)
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


def load_config():
    """--config with its overrides applied, or a one-line error naming what is wrong
    (ml_collections loads the file lazily, at first use, with a long traceback)."""
    path = config_flags.get_config_filename(FLAGS["config"])
    if not os.path.isfile(path):
        _error(f"--config: no config file {path!r}")
    try:
        config = FLAGS.config
        config.keys()  # loads the file if the parser has not (overrides fail in parse_flags)
    except Exception as e:  # the config file itself fails to import or to build
        _error(f"--config {path}: {type(e).__name__}: {e}")
    return config


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    config = load_config()
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed)
    try:
        compilation_cache.enable(FLAGS.compilation_cache)
        final = training.train(config, FLAGS.workdir, progress=FLAGS.progress)
    except (CheckpointError, ValueError, FileNotFoundError) as e:  # user errors: one line
        _error(e)
    print("final:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in final.items()))


def parse_flags(argv):
    """absl's parser; a bad flag value or --config override is a one-line error."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        text = str(e)
        if "Traceback (most recent call last)" in text:  # ml_collections embeds get_config's
            text = text.split("Traceback")[0].rstrip(": \n") + ": " + text.strip().splitlines()[-1]
        _error(text)
    except AttributeError as e:  # an override of a field the --config file lacks
        _no_field(e)
    except Exception as e:  # the --config file failed to import (it is loaded while parsing)
        _error(f"--config: {type(e).__name__}: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
