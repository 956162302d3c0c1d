"""The embedded default dataset: built on first use by the stock spktrain run, then cached."""
import os

import pytest
from ase.db import connect

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import DEFAULT_SIZE, default_dataset_path
from schnetpack_molspectra.data.simulate.runner import read_failures
from spktrain import TINY_PRETRAIN, TINY_SPECFORMER, logged_scalars, run_dir, spktrain

pytestmark = pytest.mark.slow


def test_spktrain_without_data_arguments_uses_the_default_dataset(tmp_path):
    """From an empty directory: builds (or reuses) the cached default dataset and trains on it."""
    spktrain(tmp_path, "experiment=molspectra_pretrain", *TINY_PRETRAIN, *TINY_SPECFORMER, timeout=900)
    path = default_dataset_path()
    assert os.path.exists(path)
    with connect(path) as conn:
        n_rows = conn.count()
        row = next(conn.select(limit=1))
    failures = read_failures(path)
    assert n_rows + len(failures) == DEFAULT_SIZE  # every molecule is there or has its reason
    assert n_rows >= 0.9 * DEFAULT_SIZE
    assert row.data[msp.raman_spectrum].shape == (1, 3501) and "energy_U0" in row.data
    assert os.path.exists(os.path.join(run_dir(tmp_path), "best_model"))
    assert "val_contrastive_infonce" in logged_scalars(run_dir(tmp_path))
