"""Evaluations of trained models. Evaluators are built from a `logits_fn` and yield
per-record results (`Certifier`, `Attacker`); the workdir runs restore a checkpoint,
drive an evaluator over the test split into a resumable log and write the summary,
table and plot (`certify_workdir`, `attack_workdir`). Settings are typed."""
from hycas_jax.evaluation.attack_run import attack_workdir
from hycas_jax.evaluation.attacker import Attacker
from hycas_jax.evaluation.certifier import Certifier
from hycas_jax.evaluation.certify_run import certify_paths, certify_workdir
from hycas_jax.evaluation.settings import ATTACKS, RULES, AttackSettings, CertifySettings

__all__ = ["ATTACKS", "RULES", "AttackSettings", "Attacker", "CertifySettings", "Certifier",
           "attack_workdir", "certify_paths", "certify_workdir"]
