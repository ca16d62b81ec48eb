"""Attack a trained model: robust accuracy per attack, eps and decision rule.

    python attack.py --workdir runs/mnist
    python attack.py --workdir runs/mnist --eps 0,0.05,0.1 --norm linf --n_iter 100 \
        --eot_iter 20 --max 200 --attacks apgd-ce,apgd-dlr,autoattack --rules single,vote
    python attack.py --workdir runs/mnist --config.attack.n_iter=20

Unset settings come from the workdir's `config.attack`; `--eps`, `--norm`,
`--n_iter`, `--eot_iter`, `--max`, `--vote_samples` and `--seed` are short forms of
their `--config.attack.*` overrides, and `--config.dataset.data_dir=DIR` says where
the data lives on this machine. Results go to <workdir>/attack (or --out_dir):
attacks.jsonl (resumable: re-running the same command skips finished work),
attack_summary.json, robust_accuracy.md/.png. See `hycas_jax.evaluation.attack_run`.
"""
from absl import flags, logging

from hycas_jax import rng
from hycas_jax.evaluation import ATTACKS, RULES, AttackSettings, attack_workdir
from hycas_jax.runtime import cli

# flag -> AttackSettings field (config.attack's, where the config has it)
SETTINGS = {"eps": "eps", "norm": "norm", "n_iter": "n_iter", "eot_iter": "eot_iter",
            "max": "max_examples", "vote_samples": "vote_samples", "seed": "seed",
            "stride": "stride", "attacks": "attacks", "rules": "rules",
            "batch_size": "batch_size", "vote_sigma": "vote_sigma", "repeats": "repeats",
            "prng_impl": "prng_impl"}


def define(fv: flags.FlagValues, argv) -> None:
    flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoint.",
                        required=True, flag_values=fv)
    cli.define_workdir_config(fv, argv)
    flags.DEFINE_list("eps", None, "Radii, comma-separated.", flag_values=fv)
    flags.DEFINE_string("norm", None, "'linf' or 'l2'.", flag_values=fv)
    flags.DEFINE_integer("n_iter", None, "APGD iterations.", flag_values=fv)
    flags.DEFINE_integer("eot_iter", None, "EOT draws per gradient.", flag_values=fv)
    flags.DEFINE_integer("max", None, "N test images.", flag_values=fv)
    flags.DEFINE_integer("stride", None, "Every stride-th test image (default: spread the N "
                         "images evenly over the split, so a label-sorted split gives every "
                         "class).", flag_values=fv)
    flags.DEFINE_list("attacks", None, f"Attacks, from {', '.join(ATTACKS)} (default: "
                      f"{','.join(AttackSettings.attacks)}).", flag_values=fv)
    flags.DEFINE_list("rules", None, f"Decision rules scored, from {', '.join(RULES)} "
                      "(default: all).", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Images per attacked batch (default 100).",
                         flag_values=fv)
    flags.DEFINE_integer("vote_samples", None, "Passes per vote.", flag_values=fv)
    flags.DEFINE_float("vote_sigma", None, "Input-noise sigma of the vote (default: training "
                       "sigma).", flag_values=fv)
    flags.DEFINE_integer("repeats", None, "Passes per image scoring the single rule "
                         "(default 10).", flag_values=fv)
    flags.DEFINE_integer("seed", None, "Seed of the attack and scoring keys.", flag_values=fv)
    flags.DEFINE_enum("prng_impl", None, list(rng.IMPLS), "How PRNG keys are made (default: "
                      "the run config's prng_impl, threefry2x32 unless it names another).",
                      flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Output directory (default: <workdir>/attack).",
                        flag_values=fv)
    cli.define_runtime_flags(fv, multi_host=True)


def _eps(values):
    if values is None:
        return None
    try:
        return tuple(float(e) for e in values)
    except ValueError:
        raise cli.UsageError(f"--eps must be comma-separated numbers, got "
                             f"{','.join(values)!r}") from None


def body(fv: flags.FlagValues) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    changed = cli.config_overrides(fv, ("attack", "dataset.data_dir"), "attack.py")
    given = {flag: fv[flag].value for flag in SETTINGS}
    given["eps"] = _eps(given["eps"])
    flagged = {field: cli.merge_flag(flag, given[flag], fv.config.attack.get(field),
                                     overridden=f"attack.{field}" in changed)
               for flag, field in SETTINGS.items()}
    # The workdir's config with the --config overrides, then the short flags; checked
    # here, before the (slow) model restore, so a typo fails at once.
    settings = AttackSettings.from_config(fv.config, **flagged)
    cli.start_runtime(fv)
    attack_workdir(fv.workdir, settings, step=fv.step, out_dir=fv.out_dir,
                   data_dir=changed.get("dataset.data_dir"), progress=fv.progress)


def run(argv) -> int:
    """The tool on an argument list (argv[0] is the program); returns the exit status."""
    return cli.run("attack.py", define, body, argv)


if __name__ == "__main__":
    cli.main("attack.py", define, body)
