"""Mends for SchNetPack's own incompatibilities with newer dependencies (:func:`mend_schnetpack`, called
when the package is imported)."""

import numpy as np
from schnetpack.nn.ops import so3
from schnetpack.train.callbacks import PredictionWriter

__all__ = ["mend_schnetpack"]


def mend_schnetpack() -> None:
    """Work around SchNetPack's known incompatibilities with newer dependencies (called on import).

    - SchNetPack 2.2.0's ``SO3net`` builds its Clebsch-Gordan table
      (``schnetpack.nn.ops.so3.generate_clebsch_gordan``) by passing numpy integers to sympy's
      ``clebsch_gordan``, which sympy >= 1.13 refuses ("expecting integer or half-integer, got 0"):
      on the Python 3.12 stack (torch 2.5 pins sympy 1.13.1) no SO3net can be built. Where sympy
      refuses numpy integers, the table's builder gets plain ints (the same coefficients).
    - ``spkpredict`` (SchNetPack 2.1.1 and 2.2.0): see :func:`_mend_prediction_writer`.
    """
    _mend_prediction_writer()
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


def _mend_prediction_writer() -> None:
    """Make ``spkpredict`` write its predictions with one dataloader.

    ``schnetpack.train.PredictionWriter.write_on_epoch_end`` iterates ``predictions[0]`` as the
    batches of the first dataloader; Lightning 2.x hands a list of batches (dicts) when there is one
    dataloader and a list of such lists only for several, so with ``spkpredict``'s one loader it
    iterates the keys of the first batch and stops with ``AttributeError: 'str' object has no
    attribute 'items'``. Upstream-ready fix, in ``write_on_epoch_end`` before the loop::

        if predictions and isinstance(predictions[0], dict):  # one dataloader
            predictions = [predictions]
    """
    original = PredictionWriter.write_on_epoch_end
    if getattr(original, "__wrapped__", None) is not None:
        return

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        if predictions and isinstance(predictions[0], dict):  # one dataloader: a list of batches
            predictions, batch_indices = [predictions], [batch_indices]
        return original(self, trainer, pl_module, predictions, batch_indices)

    write_on_epoch_end.__wrapped__ = original
    PredictionWriter.write_on_epoch_end = write_on_epoch_end
