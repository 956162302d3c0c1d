"""Reloading the checkpoints a run wrote itself, on any torch.

SchNetPack's ``AtomisticTask`` saves its hyperparameters, and so pickles its model, outputs,
optimizer and scheduler classes and omegaconf configs into every Lightning checkpoint. torch >= 2.6
loads checkpoints with ``weights_only=True`` by default and refuses those globals
(``UnpicklingError: Unsupported global``), so ``spktrain``'s own reloads - the test stage
(``trainer.test(ckpt_path="best")``), a resume (``run.id``) and ``load_from_checkpoint(best_path)`` -
fail at the end of every run. Lightning >= 2.6 takes ``weights_only`` in ``fit``/``validate``/
``test``/``predict`` and ``load_from_checkpoint``. Here it is set to ``False`` only for a checkpoint
the run itself wrote: ``"best"``/``"last"`` or a file inside one of the trainer's checkpoint folders
(:class:`Trainer`), or a file inside the run directory of a ``spktrain`` run in progress
(:func:`written_by_this_run`, used by ``MolSpectraTask.load_from_checkpoint``). Any other checkpoint
keeps torch's and Lightning's default. Nothing is changed where Lightning has no ``weights_only``.
"""

import inspect
import os
from typing import Iterable, Optional

import pytorch_lightning as pl

__all__ = ["Trainer", "LIGHTNING_WEIGHTS_ONLY", "written_by_this_run"]

#: whether this Lightning takes ``weights_only`` when it loads a checkpoint (Lightning >= 2.6)
LIGHTNING_WEIGHTS_ONLY = "weights_only" in inspect.signature(pl.Trainer.fit).parameters

_LIGHTNING_NAMES = ("best", "last", "hpc", "registry")


def _inside(path: str, folders: Iterable[str]) -> bool:
    real = os.path.realpath(path)
    for folder in folders:
        folder = os.path.realpath(folder)
        if os.path.commonpath([real, folder]) == folder:
            return True
    return False


def written_by_this_run(path, folders: Optional[Iterable[str]] = None) -> bool:
    """Whether the checkpoint ``path`` lies in ``folders``, or (``folders=None``) in the run directory
    of the ``spktrain`` run this process is (spktrain works inside its run directory, where it wrote
    ``config.yaml`` first)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    if folders is None:
        cwd = os.getcwd()
        folders = [cwd] if os.path.isfile(os.path.join(cwd, "config.yaml")) else []
    return _inside(os.fspath(path), folders)


class Trainer(pl.Trainer):
    """Lightning's ``Trainer`` that reloads its own checkpoints with full unpickling on torch >= 2.6.

    ``fit``, ``validate``, ``test`` and ``predict`` with ``ckpt_path`` ``"best"``, ``"last"``, or a file
    in one of the trainer's ``ModelCheckpoint`` folders, and no ``weights_only`` given, load it with
    ``weights_only=False``: SchNetPack's checkpoints pickle the model and its configs. Every other
    checkpoint loads with the defaults. The experiments build this class (``trainer._target_``).
    """

    def _own(self, kwargs: dict) -> dict:
        ckpt = kwargs.get("ckpt_path")
        if not LIGHTNING_WEIGHTS_ONLY or ckpt is None or kwargs.get("weights_only") is not None:
            return kwargs
        folders = [c.dirpath for c in self.checkpoint_callbacks if getattr(c, "dirpath", None)]
        if ckpt in _LIGHTNING_NAMES or written_by_this_run(ckpt, folders):
            kwargs = dict(kwargs, weights_only=False)
        return kwargs

    def fit(self, model, *args, **kwargs):
        return super().fit(model, *args, **self._own(kwargs))

    def validate(self, *args, **kwargs):
        return super().validate(*args, **self._own(kwargs))

    def test(self, *args, **kwargs):
        return super().test(*args, **self._own(kwargs))

    def predict(self, *args, **kwargs):
        return super().predict(*args, **self._own(kwargs))
