"""Train a HyCAS model (or a baseline) from a config file.

    python train.py --config configs/mnist.py --workdir runs/mnist
    python train.py --config configs/mnist.py --config.training.sigma=0.5 --workdir runs/s05

Re-running the same command after an interruption resumes from the last
checkpoint in --workdir.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from hycas_jax import training

config_flags.DEFINE_config_file("config", "configs/mnist.py", "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.", required=True)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    final = training.train(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress)
    print("final:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in final.items()))


if __name__ == "__main__":
    app.run(main)
