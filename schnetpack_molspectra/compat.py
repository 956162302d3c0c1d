"""Old homes of moved names, for files saved before the move; and mends for SchNetPack's own
incompatibilities with newer dependencies (:func:`mend_schnetpack`).

A saved ``best_model`` or Lightning checkpoint is a pickle: it names each class by the module it
was defined in when saved. A module whose classes moved keeps a module ``__getattr__`` made by
:func:`moved_names`, so those files still load; new code imports each name from its one home.
"""
import importlib
from typing import Callable, Dict

__all__ = ["moved_names", "mend_schnetpack"]


def moved_names(module: str, homes: Dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that finds each of ``homes`` (old name -> ``package.module.Name``)."""

    def __getattr__(name: str):
        if name in homes:
            home, _, attribute = homes[name].rpartition(".")
            return getattr(importlib.import_module(home), attribute)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def mend_schnetpack() -> None:
    """Work around SchNetPack's known incompatibilities with newer dependencies (called on import).

    - SchNetPack 2.2.0's ``SO3net`` builds its Clebsch-Gordan table
      (``schnetpack.nn.ops.so3.generate_clebsch_gordan``) by passing numpy integers to sympy's
      ``clebsch_gordan``, which sympy >= 1.13 refuses ("expecting integer or half-integer, got 0"):
      on the Python 3.12 stack (torch 2.5 pins sympy 1.13.1) no SO3net can be built. Where sympy
      refuses numpy integers, the table's builder gets plain ints (the same coefficients).
    """
    import numpy as np
    from schnetpack.nn.ops import so3

    original = so3.clebsch_gordan
    if getattr(original, "__wrapped__", None) is not None:
        return
    try:
        original(*[np.int64(0)] * 6)
    except ValueError:

        def clebsch_gordan(*args):
            return original(*(int(a) for a in args))

        clebsch_gordan.__wrapped__ = original
        so3.clebsch_gordan = clebsch_gordan
