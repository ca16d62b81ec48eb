"""Evaluation runs over trained workdirs, one module per kind of run.

Names are imported lazily from their modules (`certify_run.certify_workdir`),
so importing one kind of run does not load the others.
"""
import importlib

_EXPORTS = {"certify_workdir": "certify_run"}  # name -> module in this package


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
