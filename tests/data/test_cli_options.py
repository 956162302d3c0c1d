"""spkspectra options a user reaches for: QM9 by GDB index, structure files by --xyz/--db."""

import subprocess
import sys

from ase.db import connect


def spkspectra(*args):
    return subprocess.run(
        [sys.executable, "-m", "schnetpack_molspectra.cli.spkspectra", *args], capture_output=True, text=True
    )


def test_qm9_by_gdb_indices_keeps_their_order_and_names_unknown_ones(tmp_path):
    out = str(tmp_path / "q.db")
    assert spkspectra("qm9", out, "--indices", "18", "1").returncode == 0
    with connect(out) as conn:
        rows = list(conn.select())
    assert [int(r.data["gdb_index"][0]) for r in rows] == [18, 1]
    assert [r.key_value_pairs["smiles"] for r in rows] == ["CC(C)=O", "C"]
    bad = spkspectra("qm9", str(tmp_path / "bad.db"), "--indices", "1", "999999")
    assert bad.returncode == 2 and "999999" in bad.stderr and not (tmp_path / "bad.db").exists()


def test_xyz_and_db_are_names_of_the_structure_file_option(tmp_path):
    for flag in ("--xyz", "--db"):
        result = spkspectra("simulate", str(tmp_path / "s.db"), flag, str(tmp_path / "none.xyz"))
        assert result.returncode == 2 and "none.xyz does not exist" in result.stderr


def test_a_bug_is_a_traceback_not_a_bad_input(monkeypatch, capsys):
    """Exit code 2 and one line are for bad inputs (OSError, ValueError); any other error, e.g. a
    KeyError from a bug, propagates with its traceback."""
    import pytest

    from schnetpack_molspectra.cli import spkspectra as cli

    def broken(args):
        raise KeyError("internal")

    monkeypatch.setattr(cli, "_default", broken)
    with pytest.raises(KeyError, match="internal"):
        cli.main(["default"])
