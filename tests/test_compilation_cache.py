"""hycas_jax.runtime.compilation_cache: the switch the command-line tools use.

The end-to-end check (a rerun of certify.py compiles nothing anew) is in
tests/test_certify_run.py; the training runs of tests/test_training.py share
the session's cache (tests/conftest.py).
"""
import jax
import pytest

from hycas_jax.runtime import compilation_cache

OPTIONS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def restore_config():
    saved = {name: getattr(jax.config, name) for name in OPTIONS}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_enable_sets_jax_cache_and_creates_the_folder(tmp_path, monkeypatch, restore_config):
    monkeypatch.delenv(compilation_cache.MIN_COMPILE_ENV, raising=False)
    path = compilation_cache.enable(str(tmp_path / "a" / "b"))
    assert path == str(tmp_path / "a" / "b") and (tmp_path / "a" / "b").is_dir()
    assert jax.config.jax_enable_compilation_cache
    assert jax.config.jax_compilation_cache_dir == path
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0


def test_environment_keeps_its_minimum_compile_time(tmp_path, monkeypatch, restore_config):
    monkeypatch.setenv(compilation_cache.MIN_COMPILE_ENV, "2.5")
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    compilation_cache.enable(str(tmp_path))
    assert jax.config.jax_persistent_cache_min_compile_time_secs == before


@pytest.mark.parametrize("off", ["", None])
def test_empty_path_turns_the_cache_off(off, tmp_path, restore_config):
    compilation_cache.enable(str(tmp_path))
    assert compilation_cache.enable(off) is None
    assert not jax.config.jax_enable_compilation_cache


def test_default_follows_jax_environment_variable(monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere/xla")
    assert compilation_cache.default_dir() == "/somewhere/xla"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    assert compilation_cache.default_dir().endswith("/.cache/hycas_jax/xla")


def test_uncreatable_folder_is_a_clear_error(tmp_path, restore_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="compilation cache directory .* cannot be created"):
        compilation_cache.enable(str(blocker / "xla"))
