"""The user's flow as printed, offline, from the main job's model: the summary's fine-tune command
as printed (QM9 built from qm9pack, no download), then ``spkpredict`` on its result, checked against
the model called directly. (md17_finetune and MD from the same model: finetune/test_md17.py.)"""

import os
import shlex

import numpy as np
import pytest
import torch
from ase.db import connect
from spktrain import run_dir, spktrain

from schnetpack_molspectra.data.default import qm9_dataset_path

pytestmark = pytest.mark.slow
SMALL = [
    "data.num_train=48",
    "data.num_val=16",
    "data.num_test=16",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "data.num_workers=0",
]


def test_printed_finetune_command_runs_as_printed_then_spkpredict(main_job, tmp_path):
    proc, _ = main_job
    (line,) = [line for line in proc.stdout.splitlines() if "fine-tune it:" in line]
    command = shlex.split(line.split("fine-tune it:", 1)[1])
    assert command[0] == "spktrain" and "experiment=qm9_finetune" in command
    assert not any(arg.startswith("data.datapath") for arg in command)  # QM9 offline by default
    ft = spktrain(tmp_path / "ft", *command[1:], *SMALL, timeout=900)
    assert "Downloading" not in ft.stdout + ft.stderr
    assert os.path.isfile(qm9_dataset_path())  # built once into the cache, for every later run
    run = run_dir(tmp_path / "ft")

    # spkpredict (SchNetPack's CLI) on the fine-tuned model, for 5 QM9 molecules it did not see
    with connect(qm9_dataset_path()) as conn:
        atoms = [conn.get(id=i).toatoms() for i in range(100, 105)]
    from schnetpack.data import ASEAtomsData

    ASEAtomsData.create(str(tmp_path / "new.db"), distance_unit="Ang", property_unit_dict={}).add_systems(
        [{}] * 5, atoms
    )
    spktrain(
        tmp_path,
        f"datapath={tmp_path / 'new.db'}",
        f"modeldir={run}",
        f"outputdir={tmp_path / 'pred'}",
        "cutoff=5.0",
        command="spkpredict",
    )
    predicted = torch.load(tmp_path / "pred" / "predictions.pt", weights_only=False)["gap"].numpy()

    import schnetpack.transform as trn
    from schnetpack.interfaces import AtomsConverter

    model = torch.load(os.path.join(run, "best_model"), weights_only=False).eval()
    converter = AtomsConverter(neighbor_list=trn.MatScipyNeighborList(cutoff=5.0), dtype=torch.float32)
    direct = model(converter(atoms))["gap"].detach().numpy()
    assert predicted.shape == (5,) and np.isfinite(predicted).all()
    np.testing.assert_allclose(predicted, direct, rtol=1e-5, atol=1e-6)
