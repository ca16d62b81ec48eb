"""Attack a trained model: robust accuracy per attack, eps and decision rule.

    python attack.py --workdir runs/mnist
    python attack.py --workdir runs/mnist --eps 0,0.05,0.1 --norm linf --n_iter 100 \
        --eot_iter 20 --max 200 --attacks apgd-ce,apgd-dlr,autoattack --rules single,vote

Unset flags come from the workdir's `config.attack`. Results go to
<workdir>/attack (or --out_dir): attacks.jsonl (resumable: re-running the same
command skips finished work), attack_summary.json, robust_accuracy.md/.png.
See `hycas_jax.evaluation.attack_run` for the attacks, rules and targets.
"""
import sys

from absl import app, flags, logging

from hycas_jax import compilation_cache
from hycas_jax.checkpointing import CheckpointError
from hycas_jax.evaluation import attack_run

flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoint.", required=True)
flags.DEFINE_list("eps", None, "Radii, comma-separated (default: config.attack.eps).")
flags.DEFINE_string("norm", None, "'linf' or 'l2' (default: config.attack.norm).")
flags.DEFINE_integer("n_iter", None, "APGD iterations (default: config.attack.n_iter).")
flags.DEFINE_integer("eot_iter", None, "EOT draws per gradient (default: config.attack.eot_iter).")
flags.DEFINE_integer("max", None, "N test images (default: config.attack.max_examples).")
flags.DEFINE_integer("stride", None, "Every stride-th test image (default: spread the N images "
                     "evenly over the split, so a label-sorted split gives every class).")
flags.DEFINE_list("attacks", ["apgd-ce", "apgd-dlr", "autoattack"],
                  f"Attacks, from {', '.join(attack_run.ATTACKS)}.")
flags.DEFINE_list("rules", list(attack_run.RULES), "Decision rules scored: single, vote.")
flags.DEFINE_integer("batch_size", None, "Images per attacked batch (default 100).")
flags.DEFINE_integer("vote_samples", None, "Passes per vote (default: config.attack.vote_samples).")
flags.DEFINE_float("vote_sigma", None, "Input-noise sigma of the vote (default: training sigma).")
flags.DEFINE_integer("repeats", None, "Passes per image scoring the single rule (default 10).")
flags.DEFINE_integer("seed", None, "Seed of attack and scoring keys (default: config.attack.seed).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string("out_dir", None, "Output directory (default: <workdir>/attack).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("compilation_cache", compilation_cache.default_dir(), compilation_cache.FLAG_HELP)
FLAGS = flags.FLAGS


def _eps_list():
    if FLAGS.eps is None:
        return None
    try:
        return [float(e) for e in FLAGS.eps]
    except ValueError:
        raise ValueError(f"--eps must be comma-separated numbers, got {','.join(FLAGS.eps)!r}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    try:
        compilation_cache.enable(FLAGS.compilation_cache)
        eps = _eps_list()
        # Checked before the (slow) model restore, so a typo fails at once.
        attack_run.check_options(eps_list=eps, norm=FLAGS.norm, attacks=FLAGS.attacks,
                                 rules=FLAGS.rules)
        attack_run.attack_workdir(
            FLAGS.workdir, eps_list=eps, norm=FLAGS.norm, n_iter=FLAGS.n_iter,
            eot_iter=FLAGS.eot_iter, attacks=tuple(FLAGS.attacks), rules=tuple(FLAGS.rules),
            max_examples=FLAGS.max, batch_size=FLAGS.batch_size, vote_samples=FLAGS.vote_samples,
            vote_sigma=FLAGS.vote_sigma, repeats=FLAGS.repeats, seed=FLAGS.seed,
            out_dir=FLAGS.out_dir, step=FLAGS.step, progress=FLAGS.progress,
            stride=FLAGS.stride)
    except (ValueError, CheckpointError) as e:
        print(f"attack.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
