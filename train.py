"""Train a HyCAS model (or a baseline) from a config file.

    python train.py --config configs/mnist.py --workdir runs/mnist
    python train.py --config configs/mnist.py --config.training.sigma=0.5 --workdir runs/s05
    python train.py --config configs/cifar10.py:0.25 --workdir runs/c10

Re-running the same command after an interruption resumes from the newest
intact checkpoint in --workdir; a larger `--config.training.num_steps` extends a
finished run. Several hosts: run the same command on every host with
--distributed (cluster auto-detected: Cloud TPU, SLURM, Open MPI, ...) or with
--coordinator_address/--num_processes/--process_id; the batch is split over
`config.mesh`'s data axis across all their devices.
"""
from absl import flags, logging

from hycas_jax import training
from hycas_jax.runtime import cli

DEFAULT_CONFIG = "configs/mnist.py"


def define(fv: flags.FlagValues, argv) -> None:
    cli.define_config_file(fv, argv, DEFAULT_CONFIG)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.",
                        required=True, flag_values=fv)
    cli.define_runtime_flags(fv, multi_host=True)


def body(fv: flags.FlagValues) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    config = cli.loaded_config(fv)
    cli.start_runtime(fv)
    final = training.train(config, fv.workdir, progress=fv.progress)
    print("final:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in final.items()))


def run(argv) -> int:
    """The tool on an argument list (argv[0] is the program); returns the exit status."""
    return cli.run("train.py", define, body, argv)


if __name__ == "__main__":
    cli.main("train.py", define, body)
