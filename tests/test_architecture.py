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
MODEL = {"models", "nn", "adapter", "functional", "logits_fn_for", "freeze", "network_bound", "flax"}
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


LIBRARY = sorted(PACKAGE.rglob("*.py"))
COMPUTING = ["nn", "models", "certification", "attacks", "data", "training", "runtime"]


def test_no_library_file_is_over_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in LIBRARY
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"split these files: {long}"


@pytest.mark.parametrize("package", COMPUTING)
def test_reporting_is_a_leaf(package):
    for path in sorted((PACKAGE / package).rglob("*.py")):
        bad = _imports(path) & REPORTING
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("init", [PACKAGE / "__init__.py"]
                         + sorted(PACKAGE.glob("*/__init__.py")), ids=lambda p: p.parent.name)
def test_each_public_api_fits_on_one_screen(init):
    source = init.read_text()
    assert "__all__" in source, f"{init.relative_to(PACKAGE)} names no public API"
    assert len(source.splitlines()) <= 40


def _private_uses(path: Path) -> list:
    """Underscore names a script takes from hycas_jax: imported, or read off a module
    it imported from hycas_jax."""
    tree = ast.parse(path.read_text())
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hycas_jax"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("hycas_jax")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("folder", ["benchmarks", "experiments"])
def test_benchmarks_and_experiments_use_public_names_only(folder):
    scripts = sorted((PACKAGE.parent / folder).glob("*.py"))
    assert scripts
    for path in scripts:
        assert not _private_uses(path), f"{folder}/{path.name}: {_private_uses(path)}"


def test_the_readme_maps_every_sub_package():
    readme = (PACKAGE.parent / "README.md").read_text()
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    missing = [p for p in packages if f"| `hycas_jax.{p}` |" not in readme]
    assert not missing, f"README's package map lacks {missing}"
