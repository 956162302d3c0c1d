"""``spkspectra predict``: a tiny spectra model (PaiNN + ``SpectraHead``, saved as a weights file
whose config rebuilds it) predicts the spectra of the usable inputs in input order; unusable ones
are named and skipped; every written format reads back with the values written, and
``identify`` reads the predictions."""

import numpy as np
import pytest
import torch

from schnetpack_molspectra.cli import spkspectra
from schnetpack_molspectra.data.inputs import smiles_to_atoms
from schnetpack_molspectra.data.spectrum_files import REFERENCE_PEAK, read_spectra, write_spectra
from schnetpack_molspectra.predict import (
    PredictError,
    collect_inputs,
    load_predictor,
    predict_spectra,
    reference_scaled,
)
from schnetpack_molspectra.spectra.grids import SPECTRUM_LENGTHS
from schnetpack_molspectra.weights import save_weights

MODALITIES = ["ir", "raman"]


def _config(output_module: dict) -> dict:
    """A run config whose ``model`` hydra builds: PaiNN (8 features, 1 interaction, cutoff 5) + ``output_module``."""
    return {
        "globals": {"cutoff": 5.0},
        "model": {
            "_target_": "schnetpack_molspectra.model.MolSpectraModel",
            "representation": {
                "_target_": "schnetpack.representation.PaiNN",
                "n_atom_basis": 8,
                "n_interactions": 1,
                "radial_basis": {"_target_": "schnetpack.nn.GaussianRBF", "n_rbf": 8, "cutoff": 5.0},
                "cutoff_fn": {"_target_": "schnetpack.nn.CosineCutoff", "cutoff": 5.0},
            },
            "input_modules": [{"_target_": "schnetpack.atomistic.PairwiseDistances"}],
            "output_modules": [output_module],
            "postprocessors": [],
            "pretrained_model": None,
        },
    }


def _weights_file(path, output_module: dict) -> str:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = _config(output_module)
    torch.manual_seed(0)
    model = instantiate(OmegaConf.create(config).model)
    return save_weights(str(path), model, config=config, card={"name": "tiny", "elements": ["H", "C", "N", "O", "F"]})


SPECTRA_HEAD = {
    "_target_": "schnetpack_molspectra.atomistic.SpectraHead",
    "n_in": 8,
    "modalities": MODALITIES,
    "n_hidden": 8,
}


@pytest.fixture(scope="module")
def spectra_model(tmp_path_factory):
    return _weights_file(tmp_path_factory.mktemp("predict") / "tiny_spectra.pt", SPECTRA_HEAD)


def _predict(capsys, *argv):
    rc = spkspectra.main(["predict", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_npz_rows_in_input_order_with_the_unknown_element_named(spectra_model, tmp_path, capsys):
    out = tmp_path / "pred.npz"
    png = tmp_path / "pred.png"
    rc, stdout, stderr = _predict(
        capsys, "--smiles", "CCO", "c1ccccc1", "C[Si](C)C", "--model", spectra_model, "--out", str(out),
        "--plot", str(png), "--device", "cpu",
    )  # fmt: skip
    assert rc == 0, stderr
    assert "skipped: input 2 (C[Si](C)C): element Si (Z=14) is not among the elements" in stdout
    assert "model card of tiny_spectra.pt" in stdout and f"{out}: written" in stdout
    with np.load(out) as f:
        assert sorted(f.files) == ["ir", "ir_grid", "names", "raman", "raman_grid", "smiles"]
        assert list(f["names"]) == ["CCO", "c1ccccc1"] and list(f["smiles"]) == ["CCO", "c1ccccc1"]
        written = {m: f[m] for m in MODALITIES}
    # each row: the model's area-normalised spectrum of that molecule alone, its peak at the reference height
    predictor = load_predictor(spectra_model)
    alone = [predict_spectra(predictor, [smiles_to_atoms(s)]) for s in ("CCO", "c1ccccc1")]
    for m in MODALITIES:
        rows = written[m]
        assert rows.shape == (2, SPECTRUM_LENGTHS[m]) and rows.dtype == np.float32
        np.testing.assert_allclose(rows.max(axis=1), REFERENCE_PEAK[m], rtol=1e-6)
        for i in range(2):
            np.testing.assert_allclose(alone[i][m].sum(), 1.0, rtol=1e-5)
            np.testing.assert_allclose(rows[i] / rows[i].sum(), alone[i][m][0], rtol=1e-4, atol=1e-9)
        assert not np.allclose(alone[0][m], alone[1][m], rtol=1e-4, atol=1e-9)  # the order check can fail
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "2 molecules plotted" in stdout


def test_batches_give_each_molecule_its_own_spectrum(spectra_model, device):
    predictor = load_predictor(spectra_model, device=str(device))
    atoms = [smiles_to_atoms(s) for s in ("CCO", "CC#N", "c1ccccc1")]
    together = predict_spectra(predictor, atoms, batch_size=64)
    one_by_one = predict_spectra(predictor, atoms, batch_size=1)
    reversed_order = predict_spectra(predictor, atoms[::-1], batch_size=2)
    assert sorted(together) == MODALITIES
    for m in MODALITIES:
        assert together[m].shape == (3, SPECTRUM_LENGTHS[m]) and together[m].dtype == np.float32
        np.testing.assert_allclose(together[m].sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(together[m], one_by_one[m], rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(together[m], reversed_order[m][::-1], rtol=1e-4, atol=1e-9)
    with pytest.raises(PredictError, match=r"molecule 1 \(CH6Si\): element Si \(Z=14\)"):
        predict_spectra(predictor, [atoms[0], smiles_to_atoms("C[SiH3]")])


def test_every_written_format_reads_back_with_its_values(spectra_model, tmp_path, capsys):
    smiles = ["CCO", "CC=O"]
    rc, _, stderr = _predict(capsys, "--smiles", *smiles, "--model", spectra_model, "--out", str(tmp_path / "p.npz"))
    assert rc == 0, stderr
    with np.load(tmp_path / "p.npz") as f:
        written = {m: f[m] for m in MODALITIES}
    npz = read_spectra(str(tmp_path / "p.npz"))
    assert [r.name for r in npz] == smiles and [r.smiles for r in npz] == smiles

    rc, stdout, stderr = _predict(
        capsys, "--smiles", *smiles, "--model", spectra_model, "--out", str(tmp_path / "p.csv")
    )
    assert rc == 0, stderr
    for m in MODALITIES:
        assert f"p_{m}.csv: written" in stdout
        records = read_spectra(str(tmp_path / f"p_{m}.csv"), modality=m)
        assert [r.name for r in records] == smiles and all(set(r.spectra) == {m} for r in records)
        np.testing.assert_allclose(np.stack([r.spectra[m] for r in records]), written[m], rtol=1e-6)
    with open(tmp_path / "p_ir.csv") as f:
        assert f.readline().startswith("# ir spectra on the grid 500-4000 cm^-1 in steps of 1 (3501 values")

    rc, stdout, stderr = _predict(
        capsys, "--smiles", *smiles, "--model", spectra_model, "--out", str(tmp_path / "p.jdx")
    )
    assert rc == 0, stderr
    for i, s in enumerate(smiles):  # several molecules: one compound file each, <stem>_<i>.jdx
        (record,) = read_spectra(str(tmp_path / f"p_{i}.jdx"))
        assert record.name == s and sorted(record.spectra) == MODALITIES
        for m in MODALITIES:
            np.testing.assert_allclose(record.spectra[m], written[m][i], rtol=0, atol=1e-8 * REFERENCE_PEAK[m])
    text = (tmp_path / "p_0.jdx").read_text()
    assert "##DATA TYPE=LINK" in text and "##DATA TYPE=INFRARED SPECTRUM" in text and "##XUNITS=1/CM" in text

    rc, _, stderr = _predict(capsys, "--smiles", "CCO", "--model", spectra_model, "--out", str(tmp_path / "one.jdx"))
    assert rc == 0, stderr
    (record,) = read_spectra(str(tmp_path / "one.jdx"))  # one molecule: exactly the path given
    # predicted alone, not in a batch of two: the same up to float32 rounding
    np.testing.assert_allclose(record.spectra["ir"], written["ir"][0], rtol=1e-5)


def test_uv_jcamp_block_reads_back_on_its_grid(tmp_path):
    rng = np.random.default_rng(0)
    spectra = {m: rng.uniform(0.0, 2.0, (1, SPECTRUM_LENGTHS[m])).astype(np.float32) for m in ("uv", "ir")}
    (path,) = write_spectra(str(tmp_path / "m.jdx"), spectra, ["water"])
    (record,) = read_spectra(path)
    assert record.name == "water" and sorted(record.spectra) == ["ir", "uv"]
    for m, values in spectra.items():
        np.testing.assert_allclose(record.spectra[m], values[0], rtol=0, atol=1e-8 * values.max())


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    spectra = reference_scaled({"ir": np.full((1, SPECTRUM_LENGTHS["ir"]), 1.0 / SPECTRUM_LENGTHS["ir"], np.float32)})

    def killed(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        write_spectra(str(tmp_path / "x.npz"), spectra, ["CCO"])
    assert list(tmp_path.iterdir()) == []


def test_identify_reads_the_predictions(spectra_model, tmp_path, capsys):
    from identify_helpers import tiny_model

    from schnetpack_molspectra.identify import identify
    from schnetpack_molspectra.provenance import record_written

    smiles = ["CCO", "c1ccccc1"]
    rc, _, stderr = _predict(capsys, "--smiles", *smiles, "--model", spectra_model, "--out", str(tmp_path / "q.npz"))
    assert rc == 0, stderr
    rc, _, stderr = _predict(capsys, "--smiles", *smiles, "--model", spectra_model, "--out", str(tmp_path / "q.jdx"))
    assert rc == 0, stderr
    best_model = tmp_path / "best_model"
    torch.save(tiny_model(MODALITIES), best_model)  # an untrained MolSpectra model of IR + Raman
    record_written(str(best_model))
    library = tmp_path / "library.smi"
    library.write_text("".join(f"{s} {s}\n" for s in smiles + ["CC#N"]))
    for queries in ([str(tmp_path / "q.npz")], [str(tmp_path / "q_0.jdx"), str(tmp_path / "q_1.jdx")]):
        results = identify(str(best_model), queries, str(library), top_k=3, cache_dir=str(tmp_path))
        assert [r.query for r in results] == smiles
        assert all(r.used == MODALITIES and len(r.hits) == 3 for r in results)


def test_a_model_without_spectra_head_is_refused(tmp_path, capsys):
    atomwise = {"_target_": "schnetpack.atomistic.Atomwise", "n_in": 8, "output_key": "energy"}
    path = _weights_file(tmp_path / "energy_model.pt", atomwise)
    with pytest.raises(PredictError, match=r"energy_model\.pt: the model has no SpectraHead .*spectra_finetune"):
        load_predictor(path)
    rc, _, stderr = _predict(capsys, "--smiles", "CCO", "--model", path, "--out", str(tmp_path / "x.npz"))
    assert rc == 2 and stderr.startswith("spkspectra predict: error: ") and "energy_model.pt" in stderr
    assert not (tmp_path / "x.npz").exists()


def test_a_best_model_of_someone_else_needs_trust(spectra_model, tmp_path):
    model = load_predictor(spectra_model).model
    torch.save(model, tmp_path / "best_model")
    with pytest.raises(PredictError, match=r"best_model.*--trust-model"):
        load_predictor(str(tmp_path))
    predictor = load_predictor(str(tmp_path), trust=True)  # the run directory, trusted
    assert predictor.modalities == MODALITIES and predictor.cutoff == 5.0
    assert predictor.elements_source.startswith("default (QM9")  # no card, no run config


def test_unparsable_smiles_and_empty_structures_are_skipped(spectra_model, tmp_path, capsys):
    rc, stdout, stderr = _predict(
        capsys, "--smiles", "C1CC(", "CCO", "--model", spectra_model, "--out", str(tmp_path / "s.csv")
    )
    assert rc == 0, stderr
    assert "skipped: input 0 (C1CC(): RDKit cannot parse SMILES 'C1CC('" in stdout
    assert [r.name for r in read_spectra(str(tmp_path / "s_raman.csv"), modality="raman")] == ["CCO"]

    from ase import Atoms
    from ase.db import connect

    db = tmp_path / "mols.db"
    with connect(str(db)) as conn:
        for atoms in (smiles_to_atoms("CCO"), Atoms(), smiles_to_atoms("CC=O")):
            conn.write(atoms)
    found = collect_inputs(load_predictor(spectra_model), file=str(db))
    assert found.names == ["mols.db:0", "mols.db:2"] and found.index == [0, 2] and found.n_inputs == 3
    assert [(s.index, s.reason) for s in found.skipped] == [(1, "has no atoms")]


def test_nothing_written_when_no_input_is_usable(spectra_model, tmp_path, capsys):
    out = tmp_path / "none.npz"
    rc, stdout, stderr = _predict(capsys, "--smiles", "[SiH4]", "C1CC(", "--model", spectra_model, "--out", str(out))
    assert rc == 2
    assert "skipped: input 0 ([SiH4]): element Si" in stdout and "skipped: input 1 (C1CC(): RDKit" in stdout
    assert stderr.startswith("spkspectra predict: error: nothing written: none of the 2 inputs")
    assert list(tmp_path.iterdir()) == []
    rc, _, stderr = _predict(capsys, "--smiles", "CCO", "--model", spectra_model, "--out", str(tmp_path / "p.txt"))
    assert rc == 2 and "unknown format .txt; use .npz, .csv, .jdx" in stderr


def test_predict_then_match_finds_the_candidate_whose_predicted_spectra_were_measured(spectra_model, tmp_path, capsys):
    """A query whose spectra are the model's prediction for candidate 2 ranks that candidate first (cosine 1),
    through the CLI's --method predict; a query only of spectra the model does not predict is refused by name."""
    from schnetpack_molspectra.identify import IdentifyError
    from schnetpack_molspectra.matching import identify_by_prediction, match_scores

    candidates = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "C1CCCCC1"]
    library = tmp_path / "candidates.smi"
    library.write_text("".join(f"{s} cand{i}\n" for i, s in enumerate(candidates)))
    query = tmp_path / "query.npz"
    assert _predict(capsys, "--smiles", candidates[2], "--model", spectra_model, "--out", str(query))[0] == 0
    argv = ["identify", str(query), "--method", "predict", "--model", spectra_model, "--library", str(library)]
    assert spkspectra.main([*argv, "--top-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "cand2" in table and table.index("cand2") < min(
        table.index(f"cand{i}") for i in (0, 1, 3, 4) if f"cand{i}" in table
    )
    assert spkspectra.main([*argv, "--exact", "--top-k", "2"]) == 0  # as they are: cosine 1, first
    assert capsys.readouterr().out.split("cand2")[0].count("cand") == 0
    assert spkspectra.main([*argv, "--scales", "0.9:x"]) == 2
    assert "--scales 0.9:x: expected LO:HI:STEP" in capsys.readouterr().err
    embedding = ["identify", str(query), "--model", spectra_model, "--library", str(library), "--exact"]
    assert spkspectra.main([*embedding, "--method", "embedding"]) == 2
    assert "apply to predict-then-match only (a spectra model such as spectra-painn-qm9" in capsys.readouterr().err
    # without --method the model decides: a spectra model predicts (the same table as --method predict)
    assert spkspectra.main([*argv, "--top-k", "3"]) == 0
    explicit = capsys.readouterr().out
    assert spkspectra.main([a for a in argv if a not in ("--method", "predict")] + ["--top-k", "3"]) == 0
    assert capsys.readouterr().out == explicit
    (result,) = identify_by_prediction(spectra_model, str(query), str(library), top_k=5)
    assert [h.name for h in result.hits][0] == "cand2" and result.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert result.used == MODALITIES and len(result.hits) == 5
    assert all(a.score >= b.score for a, b in zip(result.hits, result.hits[1:]))
    # the same scores from the matrix form, for an IR-only query: one modality's cosine
    predictor = load_predictor(spectra_model)
    predicted = predict_spectra(predictor, [smiles_to_atoms(s) for s in candidates])
    ir_only = match_scores({"ir": predicted["ir"][[2]]}, predicted, ["ir"])
    cosine = (
        predicted["ir"]
        @ predicted["ir"][2]
        / (np.linalg.norm(predicted["ir"], axis=1) * np.linalg.norm(predicted["ir"][2]))
    )
    assert np.allclose(ir_only[0], cosine, atol=1e-5)
    # tolerant matching (the default: frequency scales, smoothing): the best k of match_scores' tolerant scores
    from schnetpack_molspectra.matching import TOLERANT

    (tolerant,) = identify_by_prediction(spectra_model, str(query), str(library), top_k=3)
    query_spectra = {m: predicted[m][[2]] for m in MODALITIES}
    expected = match_scores(query_spectra, predicted, MODALITIES, **TOLERANT)[0]
    assert [h.name for h in tolerant.hits] == [f"cand{i}" for i in np.argsort(-expected, kind="stable")[:3]]
    assert np.allclose([h.score for h in tolerant.hits], np.sort(expected)[::-1][:3], atol=1e-5)
    uv_query = tmp_path / "uv.npz"
    np.savez(uv_query, uv=np.ones((1, SPECTRUM_LENGTHS["uv"])))
    with pytest.raises(IdentifyError, match="has none of the spectra the model predicts"):
        identify_by_prediction(spectra_model, str(uv_query), str(library))


def test_library_spectra_are_predicted_in_batches_and_cached_beside_the_library(spectra_model, tmp_path, capsys):
    """predict-then-match keeps the library's predicted spectra (smoothed, strided, unit rows) in a cache beside the
    library: equal to those reduced from predict_spectra whatever the batch size, read back on the next call, kept
    apart per smoothing, recomputed when the library changes, and not written with --no-cache."""
    import os

    from schnetpack_molspectra.matching import _reduced, identify_by_prediction, library_spectra

    candidates = ["CCO", "c1ccccc1", "CC(=O)O", "CCN"]
    library = tmp_path / "candidates.smi"
    library.write_text("".join(f"{s} cand{i}\n" for i, s in enumerate(candidates)))
    predictor = load_predictor(spectra_model)
    first = library_spectra(predictor, str(library), 50.0, batch_size=3)
    assert not first.from_cache and os.path.basename(first.cache_path).startswith(".candidates.smi.spectra-50cm-")
    predicted = predict_spectra(predictor, first.atoms)
    for m in MODALITIES:
        np.testing.assert_allclose(first.arrays[m], _reduced(predicted[m], m, 50.0), atol=1e-6)
    again = library_spectra(predictor, str(library), 50.0)
    assert again.from_cache and again.atoms is None and again.names == [f"cand{i}" for i in range(4)]
    assert all(np.array_equal(again.arrays[m], first.arrays[m]) for m in MODALITIES)
    exact = library_spectra(predictor, str(library), 0.0)
    assert not exact.from_cache and exact.cache_path != first.cache_path
    assert exact.arrays["ir"].shape == (4, SPECTRUM_LENGTHS["ir"])
    # a changed library is predicted anew (and its new molecule found)
    library.write_text(library.read_text() + "CCCC cand4\n")
    grown = library_spectra(predictor, str(library), 50.0)
    assert not grown.from_cache and len(grown.names) == 5 and grown.cache_path == first.cache_path
    query = tmp_path / "query.npz"
    assert _predict(capsys, "--smiles", "CCCC", "--model", spectra_model, "--out", str(query))[0] == 0
    (hit,) = identify_by_prediction(spectra_model, str(query), str(library), top_k=1)
    assert hit.hits[0].name == "cand4" and hit.hits[0].smiles == "CCCC"
    # --no-cache: a library folder without cache files stays so
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "lib.smi").write_text(library.read_text())
    lib = str(fresh / "lib.smi")
    argv = ["identify", str(query), "--method", "predict", "--model", spectra_model, "--library", lib]
    assert spkspectra.main([*argv, "--no-cache"]) == 0 and "cand4" in capsys.readouterr().out
    assert sorted(os.listdir(fresh)) == ["lib.smi"]
    assert spkspectra.main(argv) == 0 and any(".spectra-50cm-" in f for f in os.listdir(fresh))


def test_a_library_structure_the_spectra_model_cannot_take_is_named(spectra_model, tmp_path, capsys):
    """predict-then-match on a library with an element the model never saw stops naming the library file, the
    molecule and the element, and caches nothing."""
    import os

    from schnetpack_molspectra.identify import IdentifyError
    from schnetpack_molspectra.matching import identify_by_prediction

    library = tmp_path / "lib.smi"
    library.write_text("CCO ethanol\nCCN ethylamine\nC[Si](C)C tms\n")
    query = tmp_path / "query.npz"
    assert _predict(capsys, "--smiles", "CCO", "--model", spectra_model, "--out", str(query))[0] == 0
    with pytest.raises(IdentifyError, match=r"lib\.smi: molecule 2 \(tms\): element Si \(Z=14\)"):
        identify_by_prediction(spectra_model, str(query), str(library))
    assert sorted(os.listdir(tmp_path)) == ["lib.smi", "query.npz"]
