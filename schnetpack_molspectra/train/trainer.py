"""Reloading the checkpoints a run wrote itself, on any torch, and no one else's unasked.

SchNetPack's ``AtomisticTask`` saves its hyperparameters, and so pickles its model, outputs,
optimizer and scheduler classes and omegaconf configs into every Lightning checkpoint: only full
unpickling reads one, and unpickling runs whatever code the file holds. torch >= 2.6 loads
checkpoints with ``weights_only=True`` by default and refuses those globals (``UnpicklingError:
Unsupported global``), so ``spktrain``'s own reloads - the test stage (``trainer.test(ckpt_path="best")``),
a resume (``run.id``) and ``load_from_checkpoint(best_path)`` - would fail at the end of every run;
torch < 2.6 unpickles any file. Lightning >= 2.6 takes ``weights_only`` in ``fit``/``validate``/
``test``/``predict`` and ``load_from_checkpoint``. Here, on every torch:

- :class:`Trainer` records each checkpoint it writes in the user's ledger
  (:func:`schnetpack_molspectra.provenance.record_written`);
- a checkpoint named ``"best"``/``"last"`` (this trainer's), or a file a run of the running user
  wrote (:func:`written_by_own_run`), loads with ``weights_only=False``;
- any other file must read with ``weights_only=True`` (checked here, on any Lightning), unless the
  user opts in (``+trainer.trust_checkpoints=true``; ``weights_only=False`` passed to
  ``load_from_checkpoint``); else :class:`~schnetpack_molspectra.weights.UntrustedModelError` names
  the file and the opt-in, before Lightning reads it.
"""

import inspect
import os

import pytorch_lightning as pl

from schnetpack_molspectra.provenance import record_written
from schnetpack_molspectra.provenance import written_by_own_run as _written_by_own_run
from schnetpack_molspectra.weights import load_file

__all__ = ["Trainer", "LIGHTNING_WEIGHTS_ONLY", "written_by_own_run", "may_unpickle"]

#: whether this Lightning takes ``weights_only`` when it loads a checkpoint (Lightning >= 2.6)
LIGHTNING_WEIGHTS_ONLY = "weights_only" in inspect.signature(pl.Trainer.fit).parameters

_LIGHTNING_NAMES = ("best", "last", "hpc", "registry")


def written_by_own_run(path) -> bool:
    """Whether the checkpoint file ``path`` is one a run of the running user wrote (its bytes are in
    the user's ledger, :mod:`schnetpack_molspectra.provenance`)."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return False
    return _written_by_own_run(os.fspath(path))


def may_unpickle(path, trust: bool, opt_in: str) -> bool:
    """Whether Lightning may load the checkpoint ``path`` with full unpickling: ``"best"``/``"last"``
    (the trainer's own), a file a run of yours wrote, or ``trust``. Any other local file must be
    readable without unpickling (``weights_only=True``), checked here whatever Lightning's version.

    Raises:
        UntrustedModelError: ``path`` needs full unpickling and is not trusted (names ``opt_in``).
    """
    if trust or path in _LIGHTNING_NAMES or written_by_own_run(path):
        return True
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        load_file(os.fspath(path), "checkpoint", opt_in=opt_in)  # raises unless weights only
    return False


class Trainer(pl.Trainer):
    """Lightning's ``Trainer`` that records the checkpoints it writes and reloads a user's own
    checkpoints with full unpickling, anyone else's without (module docstring).

    ``fit``, ``validate``, ``test`` and ``predict`` with ``ckpt_path`` ``"best"``, ``"last"``, or a
    file a run of yours wrote, and no ``weights_only`` given, load it with ``weights_only=False``;
    any other file only if it reads with ``weights_only=True``, unless ``trust_checkpoints``
    (:func:`may_unpickle`). The experiments build this class (``trainer._target_``).

    Args:
        trust_checkpoints: unpickle any checkpoint given (``+trainer.trust_checkpoints=true``).
    """

    def __init__(self, *args, trust_checkpoints: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.trust_checkpoints = trust_checkpoints

    def save_checkpoint(self, filepath, weights_only=None, storage_options=None) -> None:
        super().save_checkpoint(filepath, weights_only=weights_only, storage_options=storage_options)
        if self.is_global_zero and os.path.isfile(filepath):  # rank 0 wrote it (a local file)
            record_written(filepath)

    def _own(self, kwargs: dict) -> dict:
        ckpt = kwargs.get("ckpt_path")
        if ckpt is None or kwargs.get("weights_only") is not None:
            return kwargs
        full = may_unpickle(ckpt, self.trust_checkpoints, "+trainer.trust_checkpoints=true")
        return dict(kwargs, weights_only=not full) if LIGHTNING_WEIGHTS_ONLY else kwargs

    def fit(self, model, *args, **kwargs):
        return super().fit(model, *args, **self._own(kwargs))

    def validate(self, *args, **kwargs):
        return super().validate(*args, **self._own(kwargs))

    def test(self, *args, **kwargs):
        return super().test(*args, **self._own(kwargs))

    def predict(self, *args, **kwargs):
        return super().predict(*args, **self._own(kwargs))
