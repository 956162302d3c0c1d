"""convert-qm9s on small files written in exactly the real QM9S format."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.db import connect
from spktrain import TINY_PRETRAIN, TINY_SPECFORMER, run_dir, spktrain

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.qm9s import QM9SFormatError, convert_qm9s
from schnetpack_molspectra.data.qm9s import write_synthetic_qm9s as write_qm9s
from schnetpack_molspectra.spectra.grids import GRIDS


def test_clean_files_convert_completely_and_train(tmp_path):
    pt, csvs = write_qm9s(str(tmp_path))
    out = str(tmp_path / "qm9s.db")
    summary = convert_qm9s(pt, csvs, out)
    assert summary["written"] == 12 and not summary["bad_rows"] and not any(summary["missing_rows"].values())
    with connect(out) as conn:
        row = conn.get(id=3)
    assert row.data[msp.ir_spectrum].shape == (1, 3501) and int(row.data[msp.gdb_index][0]) == 1002
    # values survive the round trip (compare with the CSV text)
    with open(csvs["uv"]) as f:
        lines = f.readlines()
    expected = np.array(lines[3].split(",")[1:], dtype=np.float32)
    assert np.allclose(row.data[msp.uv_spectrum][0], expected)
    with open(out + ".summary.json") as f:
        assert json.load(f)["written"] == 12
    spktrain(
        tmp_path / "run",
        "experiment=molspectra_pretrain",
        f"data.datapath={out}",
        "data.num_train=8",
        "data.num_val=2",
        *TINY_PRETRAIN,
        *TINY_SPECFORMER,
    )
    assert os.path.exists(os.path.join(run_dir(tmp_path / "run"), "best_model"))


def test_every_mismatch_is_reported_and_nothing_dropped_unseen(tmp_path):
    pt, csvs = write_qm9s(str(tmp_path), drop_ir=(4,), nan_raman=(6,), short_uv=(9,))
    with open(csvs["ir"], "a") as f:  # a row without a molecule
        f.write("57," + ",".join(["1.0"] * 3501) + "\n")
    summary = convert_qm9s(pt, csvs, str(tmp_path / "out.db"))
    assert summary["missing_rows"]["ir"] == [4]
    assert summary["orphan_rows"]["ir"] == [57]
    problems = {(os.path.basename(b["file"]), b["index"]): b["problem"] for b in summary["bad_rows"]}
    assert "non-finite" in problems[("raman_boraden.csv", 6)]
    assert "has 698 values, expected 701" in problems[("uv_boraden.csv", 9)]
    assert sorted(summary["not_written"]) == [4, 6, 9]
    assert summary["written"] == 9


def test_quoted_empty_index_header_cell_is_read(tmp_path):
    """Several CSV writers quote the index column's empty header cell: ``"",1,1.02,...``."""
    pt, csvs = write_qm9s(str(tmp_path), n=3)
    for path in csvs.values():
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
        assert lines[0].startswith(",")
        lines[0] = '""' + lines[0]  # the empty header cell, quoted
        with open(path, "w") as f:
            f.writelines(lines)
    summary = convert_qm9s(pt, csvs, str(tmp_path / "quoted.db"))
    assert summary["written"] == 3 and not summary["bad_rows"]


def test_bad_files_are_named(tmp_path):
    pt, csvs = write_qm9s(str(tmp_path), n=3)
    with pytest.raises(FileNotFoundError, match="raman spectra .*nope.csv do not exist"):
        convert_qm9s(pt, dict(csvs, raman=str(tmp_path / "nope.csv")), str(tmp_path / "a.db"))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("idx,1,2,3\n0,1,2,3\n")
    with pytest.raises(QM9SFormatError, match="wrong.csv: header has 4 columns"):
        convert_qm9s(pt, dict(csvs, uv=str(wrong)), str(tmp_path / "b.db"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(QM9SFormatError, match="garbage.pt: not a readable torch file"):
        convert_qm9s(str(garbage), csvs, str(tmp_path / "c.db"))
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "schnetpack_molspectra.cli.spkspectra",
            "convert-qm9s",
            str(tmp_path / "d.db"),
            "--pt",
            pt,
            "--uv",
            csvs["uv"],
            "--ir",
            str(tmp_path / "missing_ir.csv"),
            "--raman",
            csvs["raman"],
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and "missing_ir.csv do not exist" in cli.stderr


def test_an_empty_field_is_a_bad_row_and_the_rest_is_converted(tmp_path, capsys):
    """pandas writes NaN as an empty field; that row is reported (file + index), not an abort of the whole run."""
    import pandas as pd

    from schnetpack_molspectra.cli import spkspectra

    pt, csvs = write_qm9s(str(tmp_path), n=5)
    grid = GRIDS["ir"]
    values = np.random.default_rng(1).random((5, grid.n_points)) * 10
    values[2, 100] = np.nan
    pd.DataFrame(values, columns=grid.values()).to_csv(csvs["ir"])  # how the release was written
    with open(csvs["ir"]) as f:
        assert ",," in f.read().splitlines()[3]
    summary = convert_qm9s(pt, csvs, str(tmp_path / "out.db"))
    assert summary["bad_rows"] == [
        {"file": csvs["ir"], "index": 2, "problem": "has 1 empty values (NaN as pandas writes it), first at point 100"}
    ]
    assert summary["written"] == 4 and summary["not_written"] == [2]
    with connect(str(tmp_path / "out.db")) as conn:
        assert [row.input_index for row in conn.select()] == [0, 1, 3, 4]
    # text in a numeric field is a bad row too; the CLI lists both and succeeds
    with open(csvs["raman"]) as f:
        lines = f.read().splitlines()
    fields = lines[2].split(",")  # row 1: index, then the values
    fields[1 + 4] = "abc"
    lines[2] = ",".join(fields)
    with open(csvs["raman"], "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(csvs["uv"], "a") as f:  # a row without an index: its line is named
        f.write("abc," + ",".join(["1"] * GRIDS["uv"].n_points) + "\n")
    args = ["convert-qm9s", str(tmp_path / "cli.db"), "--pt", pt] + [f"--{m}={csvs[m]}" for m in GRIDS]
    assert spkspectra.main(args) == 0
    printed = capsys.readouterr().out
    assert "3 of 5 molecules written" in printed
    assert f"{csvs['ir']}: row 2 has 1 empty values" in printed
    assert f"{csvs['raman']}: row 1 has an unparsable value 'abc' at point 4" in printed
    assert f"{csvs['uv']}: line 7: unparsable index 'abc'" in printed
    assert not os.path.exists(str(tmp_path / "cli.partial.db"))
