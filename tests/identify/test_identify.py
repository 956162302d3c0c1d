"""``identify``: a molecule's own spectra, in every input format, retrieve its own structure
from the tiny library the model was trained on; bad inputs are named in the error."""

import csv
import os

import numpy as np
import pytest
from identify_helpers import SMILES, tiny  # noqa: F401  (tiny: the session fixture)

from schnetpack_molspectra.data.spectrum_files import read_csv, read_jcamp
from schnetpack_molspectra.identify import IdentifyError, identify, load_model
from schnetpack_molspectra.identify.encode import query_values
from schnetpack_molspectra.spectra.checks import SpectrumError
from schnetpack_molspectra.spectra.grids import GRIDS


def top1(results):
    return [r.hits[0].smiles for r in results]


def write_jcamp(path, x, y, title, data_type="INFRARED SPECTRUM", x_units="1/CM", y_units="TRANSMITTANCE", per_line=10):
    """A JCAMP-DX 4.24 file as instruments write it: ##XYDATA=(X++(Y..Y)), integer Y times YFACTOR."""
    y_factor = 1e-6
    ints = np.round(np.asarray(y) / y_factor).astype(int)
    lines = [
        f"##TITLE={title}",
        "##JCAMP-DX=4.24",
        f"##DATA TYPE={data_type}",
        "##ORIGIN=schnetpack-molspectra tests",
        "##OWNER=public domain",
        f"##XUNITS={x_units}",
        f"##YUNITS={y_units}",
        "##XFACTOR=1.0",
        f"##YFACTOR={y_factor}",
        f"##FIRSTX={x[0]:.6f}",
        f"##LASTX={x[-1]:.6f}",
        f"##NPOINTS={len(x)}",
        f"##FIRSTY={ints[0] * y_factor:.6f}",
        "##XYDATA=(X++(Y..Y))",
    ]
    for start in range(0, len(x), per_line):
        lines.append(f"{x[start]:.6f} " + " ".join(str(v) for v in ints[start : start + per_line]))
    lines.append("##END=")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("library", ["smi", "xyz"])
def test_database_queries_find_themselves(tiny, library, tmp_path, device):
    out_csv = tmp_path / "hits.csv"
    results = identify(
        tiny["models"]["all"],
        tiny["db"],
        tiny[library],
        top_k=3,
        out_csv=str(out_csv),
        cache_dir=str(tmp_path),
        device=str(device),
    )
    assert [r.query for r in results] == tiny["names"]
    assert [r.hits[0].index for r in results] == list(range(len(SMILES)))
    assert all(r.used == ["uv", "ir", "raman"] and not r.filled for r in results)
    scores = [h.score for h in results[0].hits]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(SMILES)
    assert all(r["match"] == "1" for r in rows if r["rank"] == "1")  # the query db knows its SMILES
    if library == "xyz":  # SMILES derived from the geometries (RDKit) for the hits
        from rdkit import Chem

        assert [Chem.CanonSmiles(s) for s in top1(results)] == [Chem.CanonSmiles(s) for s in SMILES]


def test_embeddings_cached_next_to_library_and_invalidated(tiny, tmp_path):
    import shutil

    lib = tmp_path / "lib.smi"
    shutil.copy(tiny["smi"], lib)
    first = identify(tiny["models"]["ir"], tiny["db"], str(lib), modality="ir", top_k=1)
    caches = [f for f in os.listdir(tmp_path) if ".molspectra-" in f]
    assert len(caches) == 1 and caches[0].startswith(".lib.smi.")
    from schnetpack_molspectra.identify import library_embeddings

    enc = load_model(tiny["models"]["ir"])
    assert library_embeddings(enc, str(lib)).from_cache
    with open(lib, "a") as f:  # the library changes: recomputed
        f.write("CCCC butane\n")
    again = library_embeddings(enc, str(lib))
    assert not again.from_cache and len(again.names) == len(SMILES) + 1
    assert top1(first) == SMILES


def test_npy_queries(tiny, tmp_path):
    ir = np.stack([s["ir"] for s in tiny["spectra"]])
    np.save(tmp_path / "ir.npy", ir)
    results = identify(
        tiny["models"]["ir"], str(tmp_path / "ir.npy"), tiny["smi"], modality="ir", cache_dir=str(tmp_path)
    )
    assert top1(results) == SMILES
    # the same through a .npz with names, all modalities, into the three-modality model
    np.savez(
        tmp_path / "all.npz",
        **{m: np.stack([s[m] for s in tiny["spectra"]]) for m in ("uv", "ir", "raman")},
        names=np.array(tiny["names"]),
    )
    results = identify(tiny["models"]["all"], str(tmp_path / "all.npz"), tiny["smi"], cache_dir=str(tmp_path))
    assert top1(results) == SMILES and results[2].query == "mol2"


def test_csv_rows_and_two_columns(tiny, tmp_path):
    rows = tmp_path / "ir_rows.csv"
    with open(rows, "w", newline="") as f:
        w = csv.writer(f)
        for name, s in zip(tiny["names"], tiny["spectra"]):
            w.writerow([name] + [f"{v:.6g}" for v in s["ir"]])
    results = identify(tiny["models"]["ir"], str(rows), tiny["smi"], modality="ir", cache_dir=str(tmp_path))
    assert top1(results) == SMILES and [r.query for r in results] == tiny["names"]

    # one spectrum as x,y: wavenumbers every 2 cm^-1 beyond the grid, absorbance in other units
    x = np.arange(400.0, 4200.0, 2.0)
    i = 5
    y = np.interp(x, GRIDS["ir"].values(), tiny["spectra"][i]["ir"], left=0, right=0) * 0.07
    xy = tmp_path / "unknown.csv"
    with open(xy, "w") as f:
        f.write("wavenumber (cm-1),IR absorbance\n" + "".join(f"{a:.1f},{b:.6g}\n" for a, b in zip(x, y)))
    (result,) = identify(tiny["models"]["ir"], str(xy), tiny["smi"], cache_dir=str(tmp_path))
    assert result.hits[0].smiles == SMILES[i] and result.query == "unknown"


def test_jcamp_transmittance(tiny, tmp_path):
    i = 3
    x = np.arange(400.0, 4200.0 + 1, 2.0)
    absorbance = np.interp(x, GRIDS["ir"].values(), tiny["spectra"][i]["ir"], left=0, right=0)
    absorbance *= 0.9 / absorbance.max()
    path = write_jcamp(tmp_path / "unknown.jdx", x, 10.0 ** (-absorbance), "unknown compound")
    (record,) = read_jcamp(path)
    assert set(record.spectra) == {"ir"} and record.external_units and record.coverage["ir"] == 1.0
    grid_absorbance = np.interp(GRIDS["ir"].values(), x, absorbance)
    assert np.allclose(record.spectra["ir"], grid_absorbance, atol=2e-5)  # T -> A, resampled
    (result,) = identify(tiny["models"]["ir"], path, tiny["smi"], cache_dir=str(tmp_path))
    assert result.hits[0].smiles == SMILES[i] and result.query == "unknown compound"
    # the three-modality model takes the IR file alone (UV and Raman fully masked) and says so
    (partial,) = identify(tiny["models"]["all"], path, tiny["smi"], cache_dir=str(tmp_path))
    assert partial.used == ["ir"] and partial.filled == ["uv", "raman"] and len(partial.hits) == 5


def test_jcamp_uv_in_nanometres_and_ir_raman_files_of_one_molecule(tiny, tmp_path):
    nm = np.arange(100.0, 400.0, 0.5)
    peak_ev = 7.0
    y = np.exp(-((1239.84198 / nm - peak_ev) ** 2) / 0.02)
    path = write_jcamp(
        tmp_path / "uv.jdx",
        nm,
        y,
        "uv test",
        data_type="UV/VISIBLE SPECTRUM",
        x_units="NANOMETERS",
        y_units="ABSORBANCE",
    )
    (record,) = read_jcamp(path)
    uv = record.spectra["uv"]
    assert abs(GRIDS["uv"].values()[uv.argmax()] - peak_ev) < 0.03
    # IR and Raman in two files, one molecule
    i = 6
    files = []
    for m, kind in (("ir", "INFRARED SPECTRUM"), ("raman", "RAMAN SPECTRUM")):
        x = np.arange(450.0, 4100.0, 1.5)
        y = np.interp(x, GRIDS[m].values(), tiny["spectra"][i][m])
        files.append(write_jcamp(tmp_path / f"{m}.jdx", x, y, f"{m} of it", data_type=kind, y_units="ARBITRARY UNITS"))
    (result,) = identify(tiny["models"]["all"], files, tiny["smi"], one_molecule=True, cache_dir=str(tmp_path))
    assert result.used == ["ir", "raman"] and result.filled == ["uv"]


def test_cli_identify(tiny, tmp_path, capsys):
    from schnetpack_molspectra.cli.spkspectra import main

    out = tmp_path / "hits.csv"
    rc = main(
        [
            "identify",
            tiny["db"],
            "--model",
            os.path.dirname(tiny["models"]["all"]),
            "--library",
            tiny["smi"],
            "--top-k",
            "2",
            "--csv",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and "<- match" in printed and "mol4" in printed
    with open(out) as f:
        assert sum(1 for _ in f) == 1 + 2 * len(SMILES)
    rc = main(["identify", tiny["db"], "--model", tiny["models"]["all"], "--library", str(tmp_path / "missing.smi")])
    assert rc == 2 and "missing.smi" in capsys.readouterr().err


# ---------------------------------------------------------------- bad inputs
def test_wrong_grid_length_and_nan_are_named(tiny, tmp_path):
    model, lib = tiny["models"]["ir"], tiny["smi"]
    np.save(tmp_path / "short.npy", np.ones((2, 3500), np.float32))
    with pytest.raises(SpectrumError, match=r"short\.npy: row 0: ir spectrum has 3500 points, expected 3501"):
        identify(model, str(tmp_path / "short.npy"), lib, modality="ir")
    rows = tmp_path / "bad.csv"
    good = tiny["spectra"][0]["ir"]
    bad = good.copy()
    bad[17] = np.nan
    with open(rows, "w") as f:
        f.write(",".join(f"{v:.5g}" for v in good) + "\n" + ",".join(f"{v:.5g}" for v in bad) + "\n")
    with pytest.raises(
        SpectrumError, match=r"bad\.csv: row 1 \(line 2\): ir spectrum has 1 non-finite .* first at point 17"
    ):
        identify(model, str(rows), lib, modality="ir")
    with pytest.raises(SpectrumError, match="fit both the IR and the Raman grid"):
        identify(model, _save(tmp_path / "ambiguous.npy", np.ones(3501)), lib)
    far = tmp_path / "far.csv"
    far.write_text("x,ir\n" + "".join(f"{x},{1.0}\n" for x in range(5000, 6000, 10)))
    with pytest.raises(SpectrumError, match=r"far\.csv: x range 5000-5990 cm\^-1 .* does not overlap"):
        identify(model, str(far), lib)


def _save(path, array):
    np.save(path, array)
    return str(path)


def test_unreadable_run_config_is_named_not_replaced_by_defaults(tiny, tmp_path):
    """The run's config.yaml gives the spectra normalisation: one that cannot be read stops identify."""
    import shutil

    shutil.copy(tiny["models"]["all"], tmp_path / "best_model")
    (tmp_path / "config.yaml").write_text("data: {transforms: [unclosed\n")
    with pytest.raises(IdentifyError, match=r"(?s)config.yaml: cannot read the run.s config .*spectra normalisation"):
        load_model(str(tmp_path / "best_model"))


def test_model_without_spectra_encoder_is_refused(tiny, tmp_path):
    import torch

    from schnetpack_molspectra.model import MolSpectraModel

    full = torch.load(tiny["models"]["ir"], weights_only=False)
    denoise_only = MolSpectraModel(
        full.representation, input_modules=list(full.input_modules), output_modules=[full.output_modules[0]]
    )
    path = tmp_path / "denoise_model"
    torch.save(denoise_only, path)
    with pytest.raises(IdentifyError, match=r"denoise_model: model has no spectra encoder \(SpectraEncoder\)"):
        identify(str(path), tiny["db"], tiny["smi"], trust=True)  # pickled by this test: trusted explicitly
    # a model that knows IR only gets a file that has only UV: named
    np.save(tmp_path / "uv.npy", np.ones((1, 701), np.float32))
    with pytest.raises(
        IdentifyError,
        match=r"uv\.npy: row 0: spectrum 'uv\.npy:0' has \['uv'\] spectra, but the model .* uses \['ir'\]",
    ):
        identify(tiny["models"]["ir"], str(tmp_path / "uv.npy"), tiny["smi"])


def test_unknown_elements_and_bad_smiles_are_named(tiny, tmp_path):
    lib = tmp_path / "chloro.smi"
    lib.write_text("CCO ethanol\nCCCl chloroethane\n")
    with pytest.raises(
        IdentifyError,
        match=r"chloro\.smi: molecule 1 \(chloroethane\): element Cl \(Z=17\) is not among .*H, C, N, O, F",
    ):
        identify(tiny["models"]["ir"], tiny["db"], str(lib), modality="ir")
    # told the model knows chlorine, it goes through
    results = identify(tiny["models"]["ir"], tiny["db"], str(lib), modality="ir", elements=["H", "C", "N", "O", "Cl"])
    assert len(results) == len(SMILES)
    bad = tmp_path / "bad.smi"
    bad.write_text("CCO\nC1CC\n")
    with pytest.raises(IdentifyError, match=r"bad\.smi: line 2: .*C1CC"):
        identify(tiny["models"]["ir"], tiny["db"], str(bad), modality="ir")


def test_measured_like_xy_spectrum_has_its_baseline_removed_and_is_found(tiny, tmp_path):
    """An x,y spectrum as an instrument gives it: a sloped, curved baseline of 30 % of the peak, 1 %
    noise, 4 cm^-1 resolution, lines broadened further. The ALS baseline is subtracted (``auto`` for
    x,y data), which brings it back near the clean spectrum, and the molecule is found."""
    i, grid = 2, GRIDS["ir"].values()
    clean = tiny["spectra"][i]["ir"].astype(np.float64)
    kernel = np.exp(-0.5 * (np.arange(-30, 31) / 4.0) ** 2)
    wider = np.convolve(clean, kernel / kernel.sum(), mode="same")  # Voigt-like, wider lines
    t = (grid - grid[0]) / (grid[-1] - grid[0])
    measured = wider + wider.max() * (0.15 + 0.1 * t + 0.05 * t**2)
    measured += 0.01 * wider.max() * np.random.default_rng(0).normal(size=grid.size)
    x = np.arange(grid[0], grid[-1], 4.0)
    path = tmp_path / "measured.csv"
    with open(path, "w") as f:
        f.write("wavenumber (cm-1),IR absorbance\n")
        f.writelines(f"{a:.1f},{b:.6g}\n" for a, b in zip(x, np.interp(x, grid, measured) * 3.0))
    (query,) = read_csv(str(path))

    def cosine(a):
        return float(a @ wider / np.linalg.norm(a) / np.linalg.norm(wider))

    corrected, raw = query_values(query, "ir"), query_values(query, "ir", baseline="none")
    assert cosine(corrected) > 0.95 > cosine(raw) + 0.2
    assert abs(corrected.max() - clean.max()) / clean.max() < 0.05  # rescaled to the training peak height
    (result,) = identify(tiny["models"]["ir"], str(path), tiny["smi"], cache_dir=str(tmp_path))
    assert result.hits[0].smiles == SMILES[i]
    with pytest.raises(ValueError, match="baseline must be auto, als or none"):
        identify(tiny["models"]["ir"], str(path), tiny["smi"], cache_dir=str(tmp_path), baseline="polynomial")
