"""Old homes of moved names, for files saved before the move.

A saved ``best_model`` or Lightning checkpoint is a pickle: it names each class by the module it
was defined in when saved. A module whose classes moved keeps a module ``__getattr__`` made by
:func:`moved_names`, so those files still load; new code imports each name from its one home.
"""
import importlib
from typing import Callable, Dict

__all__ = ["moved_names"]


def moved_names(module: str, homes: Dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that finds each of ``homes`` (old name -> ``package.module.Name``)."""

    def __getattr__(name: str):
        if name in homes:
            home, _, attribute = homes[name].rpartition(".")
            return getattr(importlib.import_module(home), attribute)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
