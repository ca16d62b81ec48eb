"""Certify a model trained by train.py: per-image TSV log, table, plot.

    python certify.py --workdir runs/mnist
    python certify.py --workdir runs/mnist --sigma 0.5 --n 100000 --skip 20 --max 500 --no-margin
    python certify.py --workdir runs/mnist --config.certify.n=100000

Settings left unset take the workdir config's `certify` values; each flag below is
a short form of its `--config.certify.*` override (`--max` is `max_examples`), and
`--config.dataset.data_dir=DIR` says where the data lives on this machine.
Re-running the same command after an interruption certifies only the images not
yet in the log. Several hosts: run the same command on each with --distributed
(or --coordinator_address/--num_processes/--process_id); every image's samples are
spread over all their devices, and process 0 writes and prints. Outputs go to --out_dir (default: the workdir); see
`hycas_jax.evaluation.certify_run`.
"""
from absl import flags, logging

from hycas_jax import rng
from hycas_jax.certification import stats
from hycas_jax.evaluation import CertifySettings, certify_workdir
from hycas_jax.evaluation.settings import CLIPS
from hycas_jax.nn import dct
from hycas_jax.runtime import cli

# flag -> CertifySettings field (config.certify's, where the config has it)
SETTINGS = {"sigma": "sigma", "n0": "n0", "n": "n", "alpha": "alpha", "batch_size": "batch_size",
            "skip": "skip", "max": "max_examples", "margin": "margin",
            "margin_samples": "margin_samples", "logit_bound": "logit_bound", "seed": "seed",
            "lowpass_form": "lowpass_form", "margin_bound": "margin_bound",
            "margin_clip": "margin_clip", "prng_impl": "prng_impl"}


def define(fv: flags.FlagValues, argv) -> None:
    flags.DEFINE_string("workdir", None, "Training run directory (train.py --workdir).",
                        required=True, flag_values=fv)
    cli.define_workdir_config(fv, argv)
    flags.DEFINE_string("out_dir", None, "Where to write the log, summary and plot "
                        "(default: workdir).", flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
    flags.DEFINE_float("sigma", None, "Input-noise level of the smoothed classifier.",
                       flag_values=fv)
    flags.DEFINE_integer("n0", None, "Monte Carlo samples that select the class.", flag_values=fv)
    flags.DEFINE_integer("n", None, "Monte Carlo samples that estimate pA.", flag_values=fv)
    flags.DEFINE_float("alpha", None, "Failure probability per image and certificate.",
                       flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Monte Carlo samples per jitted chunk.",
                         flag_values=fv)
    flags.DEFINE_integer("skip", None, "Certify every skip-th test image.", flag_values=fv)
    flags.DEFINE_integer("max", None, "Certify at most this many images (<= 0: all).",
                         flag_values=fv)
    flags.DEFINE_bool("margin", None, "Also the Lipschitz margin certificate; off: --no-margin.",
                      flag_values=fv)
    flags.DEFINE_integer("margin_samples", None, "Monte Carlo samples for the margin "
                         "certificate.", flag_values=fv)
    flags.DEFINE_float("logit_bound", None, "Clip for the margin certificate's logits.",
                       flag_values=fv)
    flags.DEFINE_enum("margin_bound", None, list(stats.BOUNDS), "The margin certificate's "
                      "confidence bound (default bernstein).", flag_values=fv)
    flags.DEFINE_enum("margin_clip", None, list(CLIPS), "fixed: clip at --logit_bound; "
                      "calibrated: from the model's logits on training images.", flag_values=fv)
    flags.DEFINE_integer("seed", None, "Root PRNG seed; image idx uses fold_in(key(seed), idx).",
                         flag_values=fv)
    flags.DEFINE_enum("lowpass_form", None, dct.LOWPASS_FORMS,
                      "How FDPAN's DCT low-pass is computed: the same map, so only speed "
                      "changes (default einsum; on an H200 kron was faster for the small CNNs).",
                      flag_values=fv)
    flags.DEFINE_enum("prng_impl", None, list(rng.IMPLS), "How PRNG keys are made (default: "
                      "the run config's prng_impl, threefry2x32 unless it names another).",
                      flag_values=fv)
    cli.define_runtime_flags(fv, multi_host=True)


def body(fv: flags.FlagValues) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    changed = cli.config_overrides(fv, ("certify", "dataset.data_dir"), "certify.py")
    flagged = {field: cli.merge_flag(flag, fv[flag].value, fv.config.certify.get(field),
                                     overridden=f"certify.{field}" in changed)
               for flag, field in SETTINGS.items()}
    # The workdir's config with the --config overrides, then the short flags.
    settings = CertifySettings.from_config(fv.config, **flagged)
    cli.start_runtime(fv)
    summary = certify_workdir(fv.workdir, settings, step=fv.step, out_dir=fv.out_dir,
                              data_dir=changed.get("dataset.data_dir"), progress=fv.progress)
    if summary is None:  # not process 0 of a multi-process run: it prints nothing
        return
    print(f"{summary['num_images']} images, step {summary['settings']['step']}, "
          f"L = {summary['settings']['lipschitz']:.6g}\n")
    print(summary["table"])
    print("\n" + "\n".join(f"{k}: {v}" for k, v in summary["files"].items()))


def run(argv) -> int:
    """The tool on an argument list (argv[0] is the program); returns the exit status."""
    return cli.run("certify.py", define, body, _gnu(argv))


def _gnu(argv):
    """absl spells it --nomargin; the GNU --no-margin is accepted too."""
    return ["--nomargin" if a == "--no-margin" else a for a in argv]


if __name__ == "__main__":
    import sys
    sys.exit(run(sys.argv))
