"""Callbacks of the training loop that are not summaries (:mod:`.summary`)."""

import pytorch_lightning as pl

__all__ = ["FinalValidation"]


class FinalValidation(pl.Callback):
    """Validate at the last step of a run that ``trainer.max_steps`` ends within an epoch.

    Lightning validates at epoch ends (``val_check_interval: 1.0``): a run of ``max_steps`` that stops
    inside an epoch leaves its last steps unvalidated, so the best checkpoint (``best_model``, the test
    stage) is that of the last finished epoch - or, when the run is shorter than one epoch (a large
    dataset), there is none and ``spktrain``'s test stage fails. At the step that reaches ``max_steps``
    this callback asks the trainer to stop (``trainer.should_stop``), which Lightning answers with a
    validation (and the checkpoint callbacks with a checkpoint) before it ends the run. Runs that end
    on an epoch boundary, or by ``max_epochs``, are left as they are.
    """

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0 or trainer.global_step < trainer.max_steps:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch ends here: validated anyway
        trainer.should_stop = True
