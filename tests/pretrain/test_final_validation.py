"""FinalValidation: a run that max_steps ends within an epoch validates (and checkpoints) at its last step."""

import os

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from schnetpack_molspectra.train import FinalValidation

BATCHES_PER_EPOCH = 10


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validated_at = []  # the global step of every validation

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.layer(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", ((self.layer(x) - y) ** 2).mean())
        if batch_idx == 0:
            self.validated_at.append(self.global_step)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def fit(folder, max_steps, callbacks):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(4 * BATCHES_PER_EPOCH, 2), torch.randn(4 * BATCHES_PER_EPOCH, 1))
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=folder, monitor="val_loss", save_top_k=-1)
    model = Tiny()
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        callbacks=[checkpoints, *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=20))
    steps = sorted(int(f.split("step=")[1].split(".")[0]) for f in os.listdir(folder)) if os.path.isdir(folder) else []
    return trainer, model.validated_at, steps


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key:UserWarning")  # Lightning alone, no validation
@pytest.mark.parametrize(
    "max_steps, lightning_alone",
    [(4, []), (14, [BATCHES_PER_EPOCH]), (2 * BATCHES_PER_EPOCH, [BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH])],
)
def test_a_run_validates_and_checkpoints_at_its_last_step(tmp_path, max_steps, lightning_alone):
    # Lightning alone validates at epoch ends only: a run shorter than an epoch has no checkpoint to test, a
    # longer one ranks the checkpoint of its last step by the last epoch end's validation loss
    _, validated, checkpointed = fit(tmp_path / "alone", max_steps, [])
    assert validated == lightning_alone
    if not lightning_alone:
        assert checkpointed == []
    trainer, validated, checkpointed = fit(tmp_path / "final", max_steps, [FinalValidation()])
    assert trainer.global_step == max_steps  # no step more, no step less
    expected = sorted(set(lightning_alone) | {max_steps})  # once at an epoch end that is the last step
    assert validated == expected and checkpointed == expected
