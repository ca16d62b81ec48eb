"""Certify a model trained by train.py: per-image TSV log, table, plot.

    python certify.py --workdir runs/mnist
    python certify.py --workdir runs/mnist --sigma 0.5 --n 100000 --skip 20 --max 500 --no-margin

Flags left unset take the workdir config's `certify` values. Re-running the
same command after an interruption certifies only the images not yet in the
log. Outputs go to --out_dir (default: the workdir); see
`hycas_jax.evaluation.certify_run`.
"""
import sys

from absl import app, flags, logging

from hycas_jax import compilation_cache, dct
from hycas_jax.checkpointing import CheckpointError
from hycas_jax.evaluation import certify_workdir

flags.DEFINE_string("workdir", None, "Training run directory (train.py --workdir).", required=True)
flags.DEFINE_string("out_dir", None, "Where to write the log, summary and plot (default: workdir).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_float("sigma", None, "Input-noise level of the smoothed classifier.")
flags.DEFINE_integer("n0", None, "Monte Carlo samples that select the class.")
flags.DEFINE_integer("n", None, "Monte Carlo samples that estimate pA.")
flags.DEFINE_float("alpha", None, "Failure probability per image and certificate.")
flags.DEFINE_integer("batch_size", None, "Monte Carlo samples per jitted chunk.")
flags.DEFINE_integer("skip", None, "Certify every skip-th test image.")
flags.DEFINE_integer("max", None, "Certify at most this many images (<= 0: all).")
flags.DEFINE_bool("margin", None, "Also the Lipschitz margin certificate; off: --no-margin.")
flags.DEFINE_integer("margin_samples", None, "Monte Carlo samples for the margin certificate.")
flags.DEFINE_float("logit_bound", None, "Clip for the margin certificate's logits.")
flags.DEFINE_integer("seed", None, "Root PRNG seed; image idx uses fold_in(key(seed), idx).")
flags.DEFINE_enum("lowpass_form", None, dct.LOWPASS_FORMS,
                  "How FDPAN's DCT low-pass is computed: the same map, so only speed changes "
                  "(default einsum; on an H200 kron was faster for the small CNNs, "
                  "see benchmarks/RESULTS_gpu.md).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("compilation_cache", compilation_cache.default_dir(), compilation_cache.FLAG_HELP)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    try:
        compilation_cache.enable(FLAGS.compilation_cache)
        summary = certify_workdir(
            FLAGS.workdir, out_dir=FLAGS.out_dir, step=FLAGS.step, sigma=FLAGS.sigma,
            n0=FLAGS.n0, n=FLAGS.n, alpha=FLAGS.alpha, batch_size=FLAGS.batch_size,
            skip=FLAGS.skip, max_examples=FLAGS.max, margin=FLAGS.margin,
            margin_samples=FLAGS.margin_samples, logit_bound=FLAGS.logit_bound,
            seed=FLAGS.seed, lowpass_form=FLAGS.lowpass_form, progress=FLAGS.progress)
    except (CheckpointError, ValueError) as e:  # user errors: one line, no traceback
        sys.exit("certify.py: error: " + " ".join(str(e).split()))
    print(f"{summary['num_images']} images, step {summary['settings']['step']}, "
          f"L = {summary['settings']['lipschitz']:.6g}\n")
    print(summary["table"])
    print("\n" + "\n".join(f"{k}: {v}" for k, v in summary["files"].items()))


def parse_flags(argv):
    """absl's parser, also accepting the GNU spelling `--no-margin` of `--nomargin`; a bad
    flag value is a one-line error, like the other user errors."""
    try:
        return FLAGS(["--nomargin" if a == "--no-margin" else a for a in argv])
    except flags.Error as e:
        sys.exit("certify.py: error: " + " ".join(str(e).split()))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
