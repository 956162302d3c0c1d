"""Every reader of user files, fuzzed with damaged files: it succeeds or raises its documented error.

Readers: QM9S CSVs and ``qm9s.pt`` (data/qm9s.py), MD17 ``.npz`` (data/md17.py), structure files
and SMILES (data/inputs.py), the QM9 xyz archive (data/qm9_xyz.py) and pre-trained checkpoints
(pretrained.py). hypothesis damages valid files written to disk: truncated, emptied, bytes
overwritten, inserted or flipped, re-encoded (UTF-16, latin-1, BOM, CRLF), fields emptied or
replaced by text, fields and lines dropped or doubled, arrays and pickles of the wrong kind.

The property: a reader returns usable data, or raises its module's ValueError subclass or
FileNotFoundError naming the file (and the row / molecule where it has them); never numpy's,
pickle's, zipfile's, tarfile's or a UnicodeDecodeError. ``spkspectra`` then exits with 2 and one
line ``spkspectra <cmd>: error: ...``, and a converter that fails leaves no output behind.
The last tests pin the bugs the fuzzer found.
"""

import io
import os
import pickle
import tarfile
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from schnetpack_molspectra.cli import spkspectra
from schnetpack_molspectra.data.inputs import StructureInputError, from_file, from_smiles
from schnetpack_molspectra.data.md17 import MD17FormatError, npz_to_db
from schnetpack_molspectra.data.qm9 import build_qm9_db
from schnetpack_molspectra.data.qm9_xyz import QM9FormatError, qm9_xyz_archive
from schnetpack_molspectra.data.qm9s import QM9SFormatError, convert_qm9s, read_qm9s_graphs, stream_spectra_csv
from schnetpack_molspectra.pretrained import PretrainedModelError, load_pretrained_weights
from schnetpack_molspectra.spectra.grids import GRIDS

#: MOLSPECTRA_FUZZ_SCALE=20 runs 20x the examples of the bounded default (a longer hunt: minutes, not seconds)
SCALE = float(os.environ.get("MOLSPECTRA_FUZZ_SCALE", "1"))


def fuzz(max_examples: int):
    """Bounded hypothesis settings: few examples, no deadline, no example database (runs do not replay)."""
    return settings(
        max_examples=max(1, int(max_examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# --------------------------------------------------------------------------- damage

#: what a broken field can hold: empty (pandas' NaN), text, out-of-range and foreign numbers
JUNK_FIELDS = ["", " ", "abc", "nan", "-inf", "1e999", "-1", "1*^-3", "0x1F", "1,2", "\x00", "é", "١٢", "9" * 25, "1_0"]
BYTE_DAMAGE = ["truncate", "empty", "garble", "insert", "flip"]
TEXT_DAMAGE = [
    "utf16",
    "utf16le",
    "bom",
    "latin1",
    "crlf",
    "field",
    "drop_field",
    "add_field",
    "drop_line",
    "dup_line",
    "blank_line",
]


def _byte_damage(draw, valid: bytes, kind: str) -> bytes:
    at = draw(st.integers(0, max(len(valid) - 1, 0)))
    if kind == "truncate":
        return valid[:at]
    if kind == "empty":
        return b""
    if kind == "flip":
        return valid[:at] + bytes([valid[at] ^ draw(st.integers(1, 255))]) + valid[at + 1 :]
    junk = draw(st.binary(min_size=1, max_size=32))
    if kind == "garble":
        return valid[:at] + junk + valid[at + len(junk) :]
    return valid[:at] + junk + valid[at:]  # insert


def _line_damage(draw, text: str, kind: str) -> str:
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "drop_line":
        del lines[i]
    elif kind == "dup_line":
        lines.insert(i, lines[i])
    elif kind == "blank_line":
        lines.insert(i, "")
    else:
        sep = "," if "," in lines[i] else None
        fields = lines[i].split(sep)
        j = draw(st.integers(0, max(len(fields) - 1, 0)))
        if kind == "field":
            fields[j : j + 1] = [draw(st.sampled_from(JUNK_FIELDS))]
        elif kind == "drop_field":
            del fields[j : j + 1]
        else:  # add_field
            fields.insert(j, draw(st.sampled_from(JUNK_FIELDS + ["1.5"])))
        lines[i] = ("," if sep else "\t").join(fields)
    return "\n".join(lines)


@st.composite
def damaged(draw, valid: bytes, text: bool = True) -> bytes:
    """``valid`` damaged one way: its bytes (truncated, emptied, overwritten, inserted, flipped) or,
    for a text file, its encoding (UTF-16, latin-1, BOM, CRLF), one field or one line."""
    kind = draw(st.sampled_from(BYTE_DAMAGE + (TEXT_DAMAGE if text else [])))
    if kind in BYTE_DAMAGE:
        return _byte_damage(draw, valid, kind)
    if kind == "utf16":
        return valid.decode("utf-8").encode("utf-16")
    if kind == "utf16le":
        return valid.decode("utf-8").encode("utf-16-le")
    if kind == "bom":
        return b"\xef\xbb\xbf" + valid
    if kind == "crlf":
        return valid.replace(b"\n", b"\r\n")
    if kind == "latin1":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + "é".encode("latin-1") + valid[at:]
    return _line_damage(draw, valid.decode("utf-8"), kind).encode("utf-8")


# --------------------------------------------------------------------------- checks


def new_folder(tmp_path) -> str:
    """A fresh folder per hypothesis example (``tmp_path`` is shared by all examples of a test)."""
    return tempfile.mkdtemp(dir=tmp_path)


def write_bytes(folder: str, name: str, content: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


def read_or_error(call, errors, *names):
    """``(call(), None)``, or ``(None, error)`` for an error of the classes ``errors`` whose message
    names every one of ``names``; any other exception fails the test with its traceback."""
    try:
        return call(), None
    except errors as err:
        message = str(err)
        for name in names:
            assert name in message, f"{type(err).__name__} does not name {name!r}: {message}"
        return None, err


def assert_cli_fails(capsys, argv, *names):
    """``spkspectra argv`` returns 2 and ends with one line ``spkspectra <cmd>: error: ...`` naming ``names``."""
    capsys.readouterr()
    code = spkspectra.main(argv)
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert code == 2, err
    assert last.startswith(f"spkspectra {argv[0]}: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in last, last
    return last


# --------------------------------------------------------------------------- QM9S


def write_qm9s(folder: str, n: int = 3):
    """``qm9s.pt`` with ``n`` molecules and the three CSVs in the release's layout (uv: 701 columns)."""
    from ase.build import molecule
    from torch_geometric.data import Data

    graphs = []
    for i, name in enumerate(["CH4", "H2O", "NH3", "HCN"][:n]):
        atoms = molecule(name)
        graphs.append(
            Data(
                number=torch.tensor([1 + i]),
                z=torch.tensor(atoms.numbers),
                pos=torch.tensor(atoms.positions, dtype=torch.float32),
                smile=name,
            )
        )
    torch.save(graphs, os.path.join(folder, "qm9s.pt"))
    rng = np.random.default_rng(0)
    csvs = {}
    for m, grid in GRIDS.items():
        lines = ["," + ",".join(f"{x:g}" for x in grid.values())]
        lines += [f"{i}," + ",".join(f"{v:.5g}" for v in rng.random(grid.n_points) * 10) for i in range(n)]
        csvs[m] = write_bytes(folder, f"{m}_boraden.csv", ("\n".join(lines) + "\n").encode())
    return os.path.join(folder, "qm9s.pt"), csvs


@pytest.fixture(scope="module")
def qm9s_files(tmp_path_factory):
    return write_qm9s(str(tmp_path_factory.mktemp("qm9s")))


@fuzz(60)
@given(data=st.data())
def test_qm9s_csv_rows_are_read_or_reported(tmp_path, qm9s_files, data):
    """A damaged CSV gives its rows, each with its problem if it has one, or an error naming the file."""
    _, csvs = qm9s_files
    modality = data.draw(st.sampled_from(sorted(GRIDS)))
    with open(csvs[modality], "rb") as f:
        content = data.draw(damaged(f.read()))
    path = write_bytes(new_folder(tmp_path), "spectra.csv", content)
    rows, _ = read_or_error(
        lambda: list(stream_spectra_csv(path, modality)), (QM9SFormatError, FileNotFoundError), path
    )
    for index, values, problem in rows or []:
        if problem is None:
            assert isinstance(index, int)
            assert values.dtype == np.float32 and values.shape == (GRIDS[modality].n_points,)
            assert np.isfinite(values).all() and (values >= 0).all()
        else:
            assert isinstance(problem, str) and problem
            assert isinstance(index, int) or (index is None and problem.startswith("line ")), (index, problem)


@fuzz(10)
@given(data=st.data())
def test_convert_qm9s_skips_bad_rows_and_never_half_writes(tmp_path, capsys, qm9s_files, data):
    """convert-qm9s with one damaged CSV: bad rows go to the summary (file + index) and the rest is
    written; a damaged header stops it naming the file, with no database left behind."""
    from ase.db import connect

    pt, csvs = qm9s_files
    modality = data.draw(st.sampled_from(sorted(GRIDS)))
    folder = new_folder(tmp_path)
    with open(csvs[modality], "rb") as f:
        bad = write_bytes(folder, f"{modality}.csv", data.draw(damaged(f.read())))
    inputs = dict(csvs, **{modality: bad})
    out_dir = os.path.join(folder, "out")
    os.mkdir(out_dir)
    out = os.path.join(out_dir, "qm9s.db")
    summary, err = read_or_error(lambda: convert_qm9s(pt, inputs, out), (QM9SFormatError, FileNotFoundError), bad)
    argv = ["convert-qm9s", os.path.join(out_dir, "cli.db"), "--pt", pt] + [f"--{m}={inputs[m]}" for m in sorted(GRIDS)]
    if err is not None:
        assert os.listdir(out_dir) == []
        assert_cli_fails(capsys, argv, bad)
        assert os.listdir(out_dir) == []
        return
    for b in summary["bad_rows"]:  # named by file and index (or line, where the index is unreadable)
        assert b["file"] == bad and (isinstance(b["index"], int) or b["problem"].startswith("line ")), b
    assert summary["written"] + len(summary["not_written"]) == 3
    with connect(out) as conn:
        assert conn.count() == summary["written"]
    assert sorted(os.listdir(out_dir)) == ["qm9s.db", "qm9s.db.summary.json"]
    capsys.readouterr()
    assert spkspectra.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{summary['written']} of 3 molecules written" in printed
    for b in summary["bad_rows"][:10]:
        assert b["file"] in printed


def _graph(**changes):
    """A QM9S graph (methane), with attributes replaced (None: removed)."""
    from torch_geometric.data import Data

    values = dict(number=torch.tensor([7]), z=torch.tensor([6, 1, 1, 1, 1]), pos=torch.zeros(5, 3), smile="C")
    values.update(changes)
    return Data(**{k: v for k, v in values.items() if v is not None})


#: pickles of the wrong object for qm9s.pt, and the graph at fault (None: the file as a whole)
WRONG_PT = {
    "dict": (lambda: {"graphs": [_graph()]}, None),
    "none": (lambda: None, None),
    "tensor": (lambda: torch.zeros(3), None),
    "ints": (lambda: [1, 2], 0),
    "no number": (lambda: [_graph(), _graph(number=None)], 1),
    "no pos": (lambda: [_graph(pos=None)], 0),
    "z 0": (lambda: [_graph(z=torch.tensor([0, 1, 1, 1, 1]))], 0),
    "z text": (lambda: [_graph(z="CH4")], 0),
    "pos shape": (lambda: [_graph(pos=torch.zeros(4, 3))], 0),
    "pos nan": (lambda: [_graph(pos=torch.full((5, 3), float("nan")))], 0),
    "pos text": (lambda: [_graph(pos="abc")], 0),
    "pos ragged": (lambda: [_graph(pos=[[0.0, 0.0], [1.0]])], 0),
    "number 1.5": (lambda: [_graph(number=torch.tensor([1.5]))], 0),
    "number text": (lambda: [_graph(number="seven")], 0),
    "smile int": (lambda: [_graph(smile=5)], 0),
}


@fuzz(40)
@given(data=st.data())
def test_qm9s_pt_is_read_or_named(tmp_path, qm9s_files, data):
    """A damaged ``qm9s.pt``, or one holding the wrong objects, is named (and the graph at fault)."""
    pt, _ = qm9s_files
    folder = new_folder(tmp_path)
    wrong = data.draw(st.sampled_from([None, *WRONG_PT]))
    graph = None
    if wrong is None:
        with open(pt, "rb") as f:
            path = write_bytes(folder, "qm9s.pt", data.draw(damaged(f.read(), text=False)))
    else:
        make, graph = WRONG_PT[wrong]
        path = os.path.join(folder, "qm9s.pt")
        torch.save(make(), path)
    names = [path] if graph is None else [path, f"graph {graph}"]
    molecules, err = read_or_error(lambda: read_qm9s_graphs(path), (QM9SFormatError, FileNotFoundError), *names)
    assert err is not None or wrong is None
    for gdb, z, pos, smiles in molecules or []:
        assert isinstance(gdb, int) and isinstance(smiles, str)
        assert z.dtype == np.int64 and ((z >= 1) & (z <= 118)).all()
        assert pos.shape == (len(z), 3) and np.isfinite(pos).all()


# --------------------------------------------------------------------------- MD17 .npz


def md17_arrays(n: int = 3, n_atoms: int = 3):
    rng = np.random.default_rng(0)
    return {
        "R": rng.normal(size=(n, n_atoms, 3)),
        "z": np.array([8, 1, 1][:n_atoms]),
        "E": rng.normal(size=(n, 1)),
        "F": rng.normal(size=(n, n_atoms, 3)),
    }


def npz_bytes(arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


DTYPES = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int64, np.uint8, np.bool_, np.complex64, "U3", "S2", "M8[s]"]
)


@st.composite
def wrong_md17_arrays(draw):
    """MD17 arrays with one changed: dropped, renamed, another shape or dtype, NaN, an object array."""
    arrays = md17_arrays()
    key = draw(st.sampled_from(["R", "z", "E", "F"]))
    change = draw(st.sampled_from(["drop", "rename", "array", "nan", "object", "extra"]))
    if change == "drop":
        del arrays[key]
    elif change == "rename":
        arrays[key.lower() + "x"] = arrays.pop(key)
    elif change == "array":
        shape = draw(npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
        arrays[key] = draw(npst.arrays(DTYPES, shape))
    elif change == "nan":
        arrays[key] = arrays[key].astype(np.float64)
        arrays[key].flat[draw(st.integers(0, arrays[key].size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif change == "object":
        arrays[key] = np.array([{"a": 1}, None], dtype=object)
    else:
        arrays["Q"] = np.zeros(2)
    return arrays


@fuzz(40)
@given(data=st.data())
def test_md17_npz_is_converted_or_named(tmp_path, capsys, data):
    """A damaged ``.npz``, or one with missing, mis-shaped, mis-typed or non-finite arrays, is named;
    a failed conversion leaves no database; a good one has an energy and forces per frame."""
    from ase.db import connect

    folder = new_folder(tmp_path)
    if data.draw(st.booleans()):
        content = data.draw(damaged(npz_bytes(md17_arrays()), text=False))
    else:
        content = npz_bytes(data.draw(wrong_md17_arrays()))
    npz = write_bytes(folder, "md17.npz", content)
    out_dir = os.path.join(folder, "out")
    os.mkdir(out_dir)
    out = os.path.join(out_dir, "md17.db")
    n, err = read_or_error(lambda: npz_to_db(npz, out), (MD17FormatError, FileNotFoundError), npz)
    if err is not None:
        assert os.listdir(out_dir) == []
        assert_cli_fails(capsys, ["md17-npz", npz, os.path.join(out_dir, "cli.db")], npz)
        assert os.listdir(out_dir) == []
        return
    with connect(out) as conn:
        rows = list(conn.select())
    assert len(rows) == n >= 1
    for row in rows:
        assert row.data["energy"].shape == (1,) and np.isfinite(row.data["energy"]).all()
        assert row.data["forces"].shape == (len(row.numbers), 3) and np.isfinite(row.data["forces"]).all()
        assert np.isfinite(row.positions).all() and (row.numbers >= 1).all()


# --------------------------------------------------------------------------- structure files and SMILES


@pytest.fixture(scope="module")
def structure_files(tmp_path_factory):
    """The same two molecules as xyz, extxyz (with energy and forces) and ASE db."""
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    folder = str(tmp_path_factory.mktemp("structures"))
    frames = [molecule("H2O"), molecule("CH4")]
    write(os.path.join(folder, "mols.xyz"), frames, format="xyz")
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    write(os.path.join(folder, "mols.extxyz"), frames, format="extxyz")
    write(os.path.join(folder, "mols.db"), frames)
    return {ext: os.path.join(folder, f"mols.{ext}") for ext in ("xyz", "extxyz", "db")}


@fuzz(50)
@given(data=st.data())
def test_structure_files_are_read_or_named(tmp_path, capsys, structure_files, data):
    """A damaged xyz/extxyz/ASE db gives usable structures or an error naming the file."""
    ext = data.draw(st.sampled_from(sorted(structure_files)))
    with open(structure_files[ext], "rb") as f:
        content = data.draw(damaged(f.read(), text=ext != "db"))
    folder = new_folder(tmp_path)
    path = write_bytes(folder, f"damaged.{ext}", content)
    molecules, err = read_or_error(lambda: from_file(path), (StructureInputError, FileNotFoundError), path)
    if err is not None:
        assert_cli_fails(capsys, ["simulate", os.path.join(folder, "out.db"), "--file", path], path)
        assert not os.path.exists(os.path.join(folder, "out.db"))
        return
    for molecule in molecules:
        atoms = molecule.atoms
        assert len(atoms) >= 1 and np.isfinite(atoms.positions).all()
        assert ((atoms.numbers >= 1) & (atoms.numbers <= 118)).all()


SMILES_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="CNOcnF()=#[]@+-123.*H/\\%", max_size=10),
    st.sampled_from(["", " ", "C1CC", "[Xx]", "c1ccc", "C(C", "*", "[*]C", "C\x00C", "CC\n", "[H]", "[Na+].[Cl-]"]),
)


@fuzz(40)
@given(smiles=SMILES_TEXT, position=st.integers(0, 2))
def test_smiles_lists_give_structures_or_name_the_smiles(capsys, smiles, position):
    """A SMILES list with one odd string: structures, or an error naming that SMILES and its position."""
    smiles_list = ["C", "O"]
    smiles_list.insert(min(position, 2), smiles)
    molecules, err = read_or_error(
        lambda: from_smiles(smiles_list), (StructureInputError,), f"SMILES {min(position, 2)}:"
    )
    if err is not None:
        if not smiles.startswith("-"):  # argparse would take it for an option
            argv = ["simulate", os.path.join(tempfile.gettempdir(), "never-written.db"), "--smiles", *smiles_list]
            assert_cli_fails(capsys, argv, f"SMILES {min(position, 2)}:")
        return
    for molecule in molecules:
        assert len(molecule.atoms) >= 1 and np.isfinite(molecule.atoms.positions).all()


# --------------------------------------------------------------------------- QM9 xyz archive

#: two molecules in the dsgdb9nsd layout, one coordinate written with the archive's *^ exponent
QM9_XYZ = {
    "dsgdb9nsd_000001.xyz": (
        "5\ngdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t-40.47893"
        "\t-40.476062\t-40.475117\t-40.498597\t6.469\t\n"
        "C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689\n"
        "H\t 2.150416*^-3\t-0.0060313176\t 0.0019761204\t 0.133921\n"
        "H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922\n"
        "H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923\n"
        "H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923\n"
        "1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078\n"
        "C\tC\t\nInChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4\n"
    ),
    "dsgdb9nsd_000003.xyz": (
        "3\ngdb 3\t799.58812\t437.90386\t282.94545\t1.8511\t6.31\t-0.2928\t0.0687\t0.3615\t19.0002\t0.021375\t-76.404702"
        "\t-76.401867\t-76.400922\t-76.422349\t6.002\t\n"
        "O\t-0.0343604951\t 0.9775395708\t 0.0076015923\t-0.589706\n"
        "H\t 0.0647664923\t 0.0205721989\t 0.0015346341\t 0.294853\n"
        "H\t 0.8717903737\t 1.3007924048\t 0.0006931336\t 0.294853\n"
        "1663.8796\t3727.3954\t3821.5961\nO\tO\t\nInChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2\n"
    ),
}
PACKINGS = {"folder": None, "tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


def pack_xyz(folder: str, members, packing: str) -> str:
    """The xyz files ``members`` (name -> bytes) as a folder or a tar archive in ``folder``."""
    if packing == "folder":
        path = os.path.join(folder, "dsgdb9nsd")
        os.mkdir(path)
        for name, content in members.items():
            write_bytes(path, name, content)
        return path
    path = os.path.join(folder, f"dsgdb9nsd.xyz.{packing}")
    with tarfile.open(path, PACKINGS[packing]) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


@fuzz(40)
@given(data=st.data())
def test_qm9_xyz_archive_is_read_or_named(tmp_path, capsys, data):
    """A damaged xyz file in a folder or tar archive, or a damaged archive: the molecules, or an
    error naming the archive (and the xyz file at fault); ``spkspectra qm9`` leaves no database."""
    folder = new_folder(tmp_path)
    packing = data.draw(st.sampled_from(sorted(PACKINGS)))
    members = {name: text.encode() for name, text in QM9_XYZ.items()}
    names = []
    if packing == "folder" or data.draw(st.booleans()):  # one xyz file damaged
        victim = data.draw(st.sampled_from(sorted(members)))
        members[victim] = data.draw(damaged(members[victim]))
        archive = pack_xyz(folder, members, packing)
        names = [archive, victim]
    else:  # the archive's bytes damaged
        archive = pack_xyz(folder, members, packing)
        with open(archive, "rb") as f:
            write_bytes(folder, os.path.basename(archive), data.draw(damaged(f.read(), text=False)))
        names = [archive]
    molecules, err = read_or_error(lambda: list(qm9_xyz_archive(archive)), (QM9FormatError, FileNotFoundError), *names)
    out_dir = os.path.join(folder, "out")
    os.mkdir(out_dir)
    if err is not None:
        assert_cli_fails(capsys, ["qm9", os.path.join(out_dir, "qm9.db"), "--from-xyz-archive", archive], archive)
        assert os.listdir(out_dir) == []
        return
    for atoms, labels, smiles, frequencies in molecules:
        assert len(atoms) >= 1 and np.isfinite(atoms.positions).all() and isinstance(smiles, str)
        assert all(np.isfinite(v) for v in labels.values()) and np.isfinite(frequencies).all()


# --------------------------------------------------------------------------- pre-trained checkpoints


def tiny_model():
    """A SchNetPack model (PaiNN, 4 features) as ``globals.pretrained_model`` loads into."""
    import schnetpack as spk

    representation = spk.representation.PaiNN(
        n_atom_basis=4,
        n_interactions=1,
        radial_basis=spk.nn.GaussianRBF(n_rbf=4, cutoff=3.0),
        cutoff_fn=spk.nn.CosineCutoff(3.0),
    )
    return spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=4, output_key="y")],
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A ``best_model`` (the whole model) and a Lightning checkpoint (``state_dict`` of ``model.*``)."""
    folder = str(tmp_path_factory.mktemp("pretrained"))
    model = tiny_model()
    torch.save(model, os.path.join(folder, "best_model"))
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 3},
        os.path.join(folder, "last.ckpt"),
    )
    return {"best_model": os.path.join(folder, "best_model"), "ckpt": os.path.join(folder, "last.ckpt")}


def _state(**changes):
    """A Lightning checkpoint's content: the tiny model's ``state_dict`` with entries replaced (None: removed)."""
    state = {f"model.{k}": v for k, v in tiny_model().state_dict().items()}
    first = next(k for k in state if k.startswith("model.representation."))
    for key, value in changes.items():
        key = first if key == "first" else key
        if value is None:
            state.pop(key)
        else:
            state[key] = value(state[key]) if callable(value) else value
    return {"state_dict": state}


#: objects a checkpoint may hold by mistake, saved with torch.save (or pickle)
WRONG_CHECKPOINTS = {
    "none": lambda: None,
    "list": lambda: [1, 2],
    "dict": lambda: {"epoch": 3},
    "state list": lambda: {"state_dict": [torch.zeros(2)]},
    "int key": lambda: {"state_dict": {1: torch.zeros(2)}},
    "text value": lambda: _state(first="weights"),
    "no encoder": lambda: {"state_dict": {"model.output_modules.0.x": torch.zeros(1)}},
    "missing": lambda: _state(first=None),
    "extra": lambda: _state(**{"model.representation.extra": torch.zeros(2)}),
    "shape": lambda: _state(first=lambda t: torch.zeros(t.numel() + 1)),
    "nan": lambda: _state(first=lambda t: torch.full_like(t, float("nan"))),
    "complex": lambda: _state(first=lambda t: t.to(torch.complex64)),
    "bool": lambda: _state(first=lambda t: t > 0),
    "module": lambda: torch.nn.Linear(2, 2),
}


@fuzz(40)
@given(data=st.data())
def test_pretrained_checkpoints_load_or_are_named(tmp_path, checkpoints, data):
    """A damaged ``best_model`` or checkpoint, or one holding the wrong objects: the weights load
    or :class:`PretrainedModelError` names the file; trusted (unpickled fully) or not."""
    folder = new_folder(tmp_path)
    wrong = data.draw(st.sampled_from([None, "pickle", *WRONG_CHECKPOINTS]))
    trust = data.draw(st.booleans())  # else a whole pickled model is refused before it is read
    path = os.path.join(folder, "best_model")
    if wrong is None:
        with open(checkpoints[data.draw(st.sampled_from(sorted(checkpoints)))], "rb") as f:
            write_bytes(folder, "best_model", data.draw(damaged(f.read(), text=False)))
    elif wrong == "pickle":  # a plain pickle, not torch.save's zip
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {"model.representation.x": np.zeros(2)}}, f)
    else:
        torch.save(WRONG_CHECKPOINTS[wrong](), path)
    model, err = read_or_error(
        lambda: load_pretrained_weights(tiny_model(), path, denoising_head=False, trust=trust),
        (PretrainedModelError, FileNotFoundError),
        path,
    )
    assert err is not None or wrong is None
    if model is not None:
        assert all(torch.isfinite(p).all() for p in model.representation.parameters())


# --------------------------------------------------------------------------- no file, a directory, an existing output


def _readers(tmp_path):
    """reader -> (call on a path, its errors, the spkspectra arguments reading that path)."""
    out = str(tmp_path / "never.db")
    return {
        "qm9s csv": (lambda p: list(stream_spectra_csv(p, "uv")), (QM9SFormatError, FileNotFoundError), None),
        "qm9s pt": (read_qm9s_graphs, (QM9SFormatError, FileNotFoundError), None),
        "npz": (lambda p: npz_to_db(p, out), (MD17FormatError, FileNotFoundError), lambda p: ["md17-npz", p, out]),
        "structures": (from_file, (StructureInputError, FileNotFoundError), lambda p: ["simulate", out, "--file", p]),
        "qm9 xyz": (
            lambda p: list(qm9_xyz_archive(p)),
            (QM9FormatError, FileNotFoundError),
            lambda p: ["qm9", out, "--from-xyz-archive", p],
        ),
        "pretrained": (
            lambda p: load_pretrained_weights(tiny_model(), p),
            (PretrainedModelError, FileNotFoundError),
            None,
        ),
    }


@pytest.mark.parametrize("reader", ["qm9s csv", "qm9s pt", "npz", "structures", "qm9 xyz", "pretrained"])
def test_missing_files_and_directories_are_named(tmp_path, capsys, reader):
    call, errors, argv = _readers(tmp_path)[reader]
    empty_dir = tmp_path / "a folder"
    empty_dir.mkdir()
    for path in (str(tmp_path / "missing.file"), str(empty_dir), write_bytes(str(tmp_path), "zero.bytes", b"")):
        result, err = read_or_error(lambda: call(path), errors, path)
        assert err is not None, f"{reader} read {path}: {result}"
        if argv is not None:
            assert_cli_fails(capsys, argv(path), path)
    assert not (tmp_path / "never.db").exists()


def test_an_existing_output_and_a_killed_runs_leftover_are_never_touched(tmp_path, capsys, qm9s_files):
    """The converters refuse an existing output, and the partial file of a killed (or running) conversion."""
    pt, csvs = qm9s_files
    npz = write_bytes(str(tmp_path), "md17.npz", npz_bytes(md17_arrays()))
    archive = pack_xyz(str(tmp_path), {k: v.encode() for k, v in QM9_XYZ.items()}, "tar.bz2")
    commands = {
        "convert-qm9s": lambda out: ["convert-qm9s", out, "--pt", pt] + [f"--{m}={csvs[m]}" for m in sorted(GRIDS)],
        "md17-npz": lambda out: ["md17-npz", npz, out],
        "qm9": lambda out: ["qm9", out, "--from-xyz-archive", archive],
    }
    for command, argv in commands.items():
        out = tmp_path / f"{command}.db"
        out.write_bytes(b"written before")
        assert_cli_fails(capsys, argv(str(out)), str(out), "exists")
        assert out.read_bytes() == b"written before"
        leftover = tmp_path / f"{command}-new.partial.db"
        leftover.write_bytes(b"a killed run's partial output")
        assert_cli_fails(capsys, argv(str(tmp_path / f"{command}-new.db")), str(leftover), "is running or was killed")
        assert leftover.read_bytes() == b"a killed run's partial output"
        assert not (tmp_path / f"{command}-new.db").exists()
        capsys.readouterr()
        assert spkspectra.main(argv(str(tmp_path / f"{command}-ok.db"))) == 0, capsys.readouterr().err
        assert (tmp_path / f"{command}-ok.db").stat().st_size > 0 and not (
            tmp_path / f"{command}-ok.partial.db"
        ).exists()


def test_a_conversion_failing_part_way_leaves_nothing(tmp_path, capsys):
    """The second molecule of the archive is broken: the first was written, then everything is removed."""
    members = {k: v.encode() for k, v in QM9_XYZ.items()}
    members["dsgdb9nsd_000003.xyz"] = members["dsgdb9nsd_000003.xyz"].replace(b"O\t-0.03", b"Q\t-0.03")
    archive = pack_xyz(str(tmp_path), members, "tar.bz2")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(QM9FormatError, match="dsgdb9nsd_000003.xyz: not a QM9 xyz file .*line 3"):
        build_qm9_db(str(out_dir / "qm9.db"), xyz_archive=archive)
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- what the fuzzer found


def test_md17_energies_must_be_one_per_frame(tmp_path):
    """E of shape (n, 0) was written as empty energies, (n, 2) lost its second column silently."""
    for shape in [(3, 0), (3, 2)]:
        npz = write_bytes(str(tmp_path), f"E{shape[1]}.npz", npz_bytes(dict(md17_arrays(), E=np.ones(shape))))
        with pytest.raises(
            MD17FormatError, match=f"E{shape[1]}.npz: inconsistent shapes .*E \\({shape[0]}, {shape[1]}\\)"
        ):
            npz_to_db(npz, str(tmp_path / f"E{shape[1]}.db"))
    assert sorted(os.listdir(tmp_path)) == ["E0.npz", "E2.npz"]


def test_an_absurd_xyz_atom_count_is_named_not_read_for_ever(tmp_path):
    """ase.io reads a garbled atom count (99999999999) line by line for ever."""
    path = tmp_path / "mols.xyz"
    path.write_text("3\n\nO 0 0 0\nH 0 0 1\nH 0 1 0\n99999999999\n\nH 0 0 0\n")
    with pytest.raises(
        StructureInputError, match="mols.xyz: structure 1: line 6 gives 99999999999 atoms, but the file ends"
    ):
        from_file(str(path))


def test_a_damaged_tar_header_does_not_drop_the_molecules_after_it(tmp_path):
    """tarfile ends an archive at the first header it cannot read; the molecules after it were lost silently."""
    archive = pack_xyz(str(tmp_path), {k: v.encode() for k, v in QM9_XYZ.items()}, "tar")
    raw = bytearray(open(archive, "rb").read())
    second = 512 + -(-len(QM9_XYZ["dsgdb9nsd_000001.xyz"]) // 512) * 512  # header of the second member
    raw[second + 100] ^= 0xFF  # its mode field: the header checksum fails
    with open(archive, "wb") as f:
        f.write(raw)
    with pytest.raises(
        QM9FormatError, match="damaged tar archive: a member header after dsgdb9nsd_000001.xyz cannot be read"
    ):
        list(qm9_xyz_archive(archive))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bool, torch.int64])
def test_parameters_of_another_type_are_refused(tmp_path, dtype):
    """load_state_dict cast complex weights to real (dropping the imaginary part) and bool to 0/1 silently."""
    path = str(tmp_path / "last.ckpt")
    torch.save(_state(first=lambda t: t.to(dtype)), path)
    with pytest.raises(
        PretrainedModelError,
        match=f"last.ckpt: its encoder does not match PaiNN: type \\(checkpoint vs encoder\\): .*{dtype}",
    ):
        load_pretrained_weights(tiny_model(), path)


def test_a_negative_row_index_is_not_taken_for_an_unparsable_one(tmp_path):
    """``-1,...`` is a row without a molecule (index -1); ``abc,...`` has no index (None) and its line is named."""
    values = ",".join(["1.0"] * GRIDS["uv"].n_points)
    path = write_bytes(
        str(tmp_path),
        "uv.csv",
        ("," + ",".join(f"{x:g}" for x in GRIDS["uv"].values()) + f"\n-1,{values}\nabc,{values}\n").encode(),
    )
    rows = list(stream_spectra_csv(path, "uv"))
    assert [(index, problem) for index, _, problem in rows] == [(-1, None), (None, "line 3: unparsable index 'abc'")]


def test_a_file_cut_inside_its_last_value_is_a_bad_row(tmp_path, qm9s_files):
    """A cut inside the last number (``1.2`` of ``1.2345``) leaves every column: the missing line end tells."""
    _, csvs = qm9s_files
    with open(csvs["uv"], "rb") as f:
        content = f.read()
    path = write_bytes(str(tmp_path), "uv.csv", content[:-3])
    rows = list(stream_spectra_csv(path, "uv"))
    assert [problem for _, _, problem in rows] == [None, None, "has no line end: the file ends inside it (truncated?)"]


def test_an_xyz_file_cut_short_is_named(tmp_path):
    """A file cut in its SMILES line (``C`` of ``CC(C)=O``) lacks the InChI line that ends every QM9 xyz file."""
    folder = tmp_path / "dsgdb9nsd"
    folder.mkdir()
    text = QM9_XYZ["dsgdb9nsd_000001.xyz"]
    (folder / "dsgdb9nsd_000001.xyz").write_text(text[: text.index("InChI")])
    with pytest.raises(QM9FormatError, match="dsgdb9nsd_000001.xyz: not a QM9 xyz file .*before the InChI"):
        list(qm9_xyz_archive(str(folder)))


def test_a_zip_member_flagged_encrypted_is_a_damaged_file(tmp_path, checkpoints):
    """One flipped bit marks a member of torch.save's zip as encrypted: zipfile raised a bare RuntimeError."""
    raw = bytearray(open(checkpoints["ckpt"], "rb").read())
    central = raw.rindex(b"PK\x01\x02")  # the last member's central directory entry
    raw[central + 8] |= 0x01  # its general purpose flags: encrypted
    path = write_bytes(str(tmp_path), "last.ckpt", bytes(raw))
    with pytest.raises(PretrainedModelError, match="last.ckpt: damaged zip archive .*encrypted"):
        load_pretrained_weights(tiny_model(), path)
    npz = bytearray(npz_bytes(md17_arrays()))
    npz[npz.rindex(b"PK\x01\x02") + 8] |= 0x01
    with pytest.raises(MD17FormatError, match="md17.npz: not a readable .npz file: damaged zip archive .*encrypted"):
        npz_to_db(write_bytes(str(tmp_path), "md17.npz", bytes(npz)), str(tmp_path / "md17.db"))
