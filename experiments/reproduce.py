"""The reproduction study: learning curves choose one budget every method trains for,
the same small grid tunes each method on held-out training data, then every method is
trained (3 seeds) and evaluated the same way; writes RESULTS.md plus plots.

    python experiments/reproduce.py                      # MNIST-5k: many hours on 2 CPU cores
    python experiments/reproduce.py --profile digits     # 8x8 digits sanity run, minutes
    python experiments/reproduce.py --profile cifar10    # the paper's CIFAR-10 budget (GPU/TPU)
    python experiments/reproduce.py --report_only        # regenerate RESULTS.md from the runs

Methods, profiles and the fairness rules: `experiments/study.py`.
Re-running the same command resumes an interrupted study.
"""
import os
import shlex
import sys
from pathlib import Path

from absl import app, flags, logging

ROOT = Path(__file__).resolve().parent

flags.DEFINE_string("profile", "mnist", "budget and data set: mnist, digits, smoke, cifar10")
flags.DEFINE_string("workdir", None, "where the runs go (default runs/reproduce/<profile>)")
flags.DEFINE_string("results", None,
                    "where RESULTS.md and plots go (default experiments/results/<profile>)")
flags.DEFINE_list("methods", None, "a subset of the methods (default: all)")
flags.DEFINE_list("seeds", None, "override the profile's seeds, e.g. 0,1,2")
flags.DEFINE_bool("report_only", False, "only regenerate the report from finished runs")
flags.DEFINE_string("reference", None, "folder with the paper's table and Cohen et al.'s logs "
                    "(default experiments/reference)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save and restore at INFO
    # Each job runs in its own process (see study.run_study's `isolate`); seeds
    # and sigmas of one architecture share executables through this on-disk
    # cache, one per profile so that two studies never share one.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                          str(Path.home() / ".cache" / "hycas_jax" / "jax_cache" / FLAGS.profile))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")
    sys.path.insert(0, str(ROOT))
    import curves
    import study
    import study_report
    import tuning

    try:
        study.check_profile(FLAGS.profile)
        methods = study.check_methods(FLAGS.methods or study.METHODS)
    except ValueError as e:
        raise app.UsageError(str(e))
    workdir = Path(FLAGS.workdir or Path("runs") / "reproduce" / FLAGS.profile)
    results = Path(FLAGS.results or ROOT / "results" / FLAGS.profile)
    if not FLAGS.report_only:
        # First the learning curves (on training data held out), which choose the budget
        # every method then trains for (the largest budget tried if a curve never flattens;
        # at most the profile's max_steps).
        profile = study.check_profile(FLAGS.profile)
        budget = curves.choose_budget(curves.run_curves(profile, workdir, methods, isolate=True),
                                      cap=profile.get("max_steps"))
        print(budget.sentence())
        steps = budget.study_steps or max(curves.budgets(profile))  # no curve: the largest
        # Then the same grid for every method at that budget, chosen on the held-out data;
        # the methods whose curves plateau past it also train to their own plateau (with the
        # same tuned values).
        hyper = tuning.winners(tuning.run_tuning(profile, workdir, steps, methods, isolate=True))
        study.run_study(FLAGS.profile, workdir, methods=methods, isolate=True,
                        seeds=FLAGS.seeds or None, steps=steps, hyper=hyper,
                        own_plateau=budget.own_plateaus())
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    kwargs = {"reference": Path(FLAGS.reference)} if FLAGS.reference else {}
    if (workdir / "study.json").exists():
        path = study_report.write_report(workdir, results, command=command, **kwargs)
    else:  # interrupted before the study stage: what the curves and the tuning have so far
        path = study_report.write_progress_report(workdir, results, FLAGS.profile,
                                                  command=command, methods=methods)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
