"""Who may import whom: the generic math (smoothing, certificates, attacks, the training
step) knows only `logits_fn(params, x, key)`: it imports no model code and nothing that
plots or formats reports. Read from the source, so the check holds whatever the package
__init__ happens to import."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hycas_jax"
GENERIC = ["certification", "checks.py", "rng.py", "attacks",
           "training/step.py", "training/optim.py", "training/metrics.py"]
MODEL = {"models", "nn", "functional", "logits_fn_for", "freeze", "flax"}
REPORTING = {"reporting", "evaluation", "matplotlib"}


def _imports(path: Path) -> set:
    """Top-level names imported by a module: hycas_jax.X -> X, others -> their package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            parts = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module.split(".")
            parts = ([module + [a.name] for a in node.names] if module == ["hycas_jax"]
                     else [module])
        else:
            continue
        for p in parts:
            names.add(p[1] if p[0] == "hycas_jax" and len(p) > 1 else p[0])
    return names


@pytest.mark.parametrize("entry", GENERIC)
def test_generic_math_imports_no_model_and_no_reporting(entry):
    root = PACKAGE / entry
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    assert files
    for path in files:
        bad = _imports(path) & (MODEL | REPORTING)
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
