"""Loading pre-trained models runs no code a file holds unless the file is one of your runs' or
you opt in: a file whose pickle writes a marker file when unpickled is refused - no marker, an
error naming the file and the opt-in - by every reader (globals.pretrained_model, identify, the
checkpoint reload); weights files and your own runs' files load without asking."""

import os
import shutil

import pytest
import schnetpack as spk
import torch
from conftest import write_hostile_pickle

from schnetpack_molspectra.cli import spkspectra
from schnetpack_molspectra.identify import IdentifyError, load_model
from schnetpack_molspectra.model import MolSpectraModel
from schnetpack_molspectra.pretrained import load_pretrained_weights, stored_state
from schnetpack_molspectra.provenance import ledger_path, record_written, written_by_own_run
from schnetpack_molspectra.task import MolSpectraTask
from schnetpack_molspectra.train import Trainer
from schnetpack_molspectra.weights import PretrainedModelError, UntrustedModelError, save_weights


def _encoder():
    return spk.representation.PaiNN(
        n_atom_basis=4,
        n_interactions=1,
        radial_basis=spk.nn.GaussianRBF(n_rbf=4, cutoff=3.0),
        cutoff_fn=spk.nn.CosineCutoff(3.0),
    )


def _model(**kwargs):
    return MolSpectraModel(
        _encoder(),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=4, output_key="y")],
        **kwargs,
    )


def test_a_hostile_file_is_never_unpickled_unasked(tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = write_hostile_pickle(tmp_path / "best_model", marker)
    as_weights_file = shutil.copy(hostile, tmp_path / "colleague.pt")  # a weights file's suffix changes nothing

    for path in (hostile, as_weights_file):
        with pytest.raises(UntrustedModelError) as err:
            load_pretrained_weights(_model(), path)
        assert f"cannot read pre-trained model {path} without unpickling it" in str(err.value)
        assert "opt in with trust=True" in str(err.value) and "builtins.exec" in str(err.value)
    with pytest.raises(UntrustedModelError, match="opt in with globals.trust_pretrained_model=true"):
        _model(pretrained_model=hostile)  # what spktrain builds from globals.pretrained_model
    with pytest.raises(IdentifyError, match=f"cannot read model {hostile} without unpickling it.*--trust-model"):
        load_model(hostile)
    capsys.readouterr()
    argv = ["identify", str(tmp_path / "q.npy"), "--model", hostile, "--library", str(tmp_path / "lib.smi")]
    assert spkspectra.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("spkspectra identify: error: cannot read model") and "--trust-model" in error
    assert hostile in error
    with pytest.raises(UntrustedModelError, match=r"cannot read checkpoint .*best_model.*weights_only=False"):
        MolSpectraTask.load_from_checkpoint(hostile)
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(UntrustedModelError, match=r"cannot read checkpoint .*trainer.trust_checkpoints=true"):
        trainer.fit(None, ckpt_path=hostile)  # a resume (run.ckpt_path) from someone else's checkpoint
    assert not marker.exists()

    # the opt-in does unpickle it: the file was live, and only the refusals kept the marker away
    with pytest.raises(PretrainedModelError, match="neither a SchNetPack model nor a Lightning checkpoint"):
        stored_state(hostile, trust=True)
    assert marker.read_text() == "unpickled"


def test_a_file_in_the_ledger_is_yours_until_its_bytes_change(tmp_path):
    trained = _model()
    path = str(tmp_path / "best_model")
    torch.save(trained, path)  # a whole model: only full unpickling reads it
    with pytest.raises(UntrustedModelError):
        load_pretrained_weights(_model(), path)
    record_written(path)  # what spktrain does with each best_model and checkpoint it writes
    assert written_by_own_run(path)
    fresh = load_pretrained_weights(_model(), path)
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.representation.parameters(), trained.representation.parameters())
    )
    copied = shutil.copy(path, tmp_path / "elsewhere")  # the same bytes anywhere: still yours
    load_pretrained_weights(_model(), copied)

    with open(path, "ab") as f:
        f.write(b"\0")  # changed after your run wrote it
    assert not written_by_own_run(path)
    with pytest.raises(UntrustedModelError):
        load_pretrained_weights(_model(), path)

    os.chmod(ledger_path(), 0o666)  # a ledger others may write to vouches for nothing
    try:
        assert not written_by_own_run(copied)
    finally:
        os.chmod(ledger_path(), 0o600)
    assert written_by_own_run(copied)


def test_weights_files_load_from_anywhere_without_unpickling(tmp_path, monkeypatch):
    trained = _model()
    path = save_weights(str(tmp_path / "from_a_paper.pt"), trained)
    assert not written_by_own_run(path)

    def unpickling(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "a weights file was read with full unpickling"
        return real_load(*args, **kwargs)

    real_load = torch.load
    monkeypatch.setattr(torch, "load", unpickling)
    fresh = load_pretrained_weights(_model(), path)
    for a, b in zip(fresh.representation.parameters(), trained.representation.parameters()):
        assert torch.allclose(a, b, atol=1e-3)  # stored in half precision
