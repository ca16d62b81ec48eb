"""Evaluation runs over trained workdirs: certification and attacks."""
from hycas_jax.evaluation.attack_run import attack_workdir
from hycas_jax.evaluation.certify_run import certify_workdir

__all__ = ["attack_workdir", "certify_workdir"]
