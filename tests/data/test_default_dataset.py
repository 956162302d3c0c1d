"""The main job from an empty directory: the shipped default dataset, a schedule sized to the
run, and the end-of-run summary."""

import json
import os

import pytest
import torch
from ase.db import connect
from spktrain import logged_scalars

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import default_dataset_path
from schnetpack_molspectra.data.sticks import load_sticks

pytestmark = pytest.mark.slow


def test_main_job_uses_the_default_dataset_sizes_its_schedule_and_summarises(main_job):
    proc, run = main_job
    path = default_dataset_path()
    with connect(path) as conn:
        n_rows = conn.count()
        row = next(conn.select(limit=1))
    assert (
        n_rows == sum(1 for _ in load_sticks()) > 0
        and row.data[msp.raman_spectrum].shape == (1, 3501)
        and "energy_U0" in row.data
    )
    assert "val_contrastive_infonce" in logged_scalars(run)

    # the summary: printed and written, each loss at the start and the end, retrieval vs chance
    assert proc.stdout.count("MolSpectra pre-training summary") == 1  # once, after the test stage
    with open(os.path.join(run, "pretraining_summary.json")) as f:
        summary = json.load(f)
    n_val = summary["end"]["molecules"]
    assert 0 < n_val <= 0.1 * n_rows + 1  # all of the validation split (num_val 0.1)
    for when in ("start", "end"):
        assert {"denoising", "mpr", "contrastive", "retrieval_top1", "retrieval_chance"} <= set(summary[when])
        assert summary[when]["retrieval_chance"] == pytest.approx(1 / n_val)
    assert summary["end"]["denoising"] < summary["start"]["denoising"]  # it learned to denoise in between
    assert summary["end"]["contrastive"] < summary["start"]["contrastive"]
    assert summary["best_model"] == os.path.join(run, "best_model") and os.path.exists(summary["best_model"])
    assert f"globals.pretrained_model={summary['best_model']}" in summary["finetune_command"]
    assert summary["finetune_command"] in proc.stdout

    # schedule sized to the run: warm-up a quarter of its steps, cosine ending with it at min_lr
    state = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), map_location="cpu", weights_only=False)
    scheduler = state["lr_schedulers"][0]
    steps = summary["steps"]
    assert steps == state["global_step"] and steps > 20
    assert scheduler["warmup_steps"] == round(0.25 * steps) and scheduler["period"] == steps
    assert scheduler["_last_lr"][0] == pytest.approx(1e-7, rel=1e-3)
