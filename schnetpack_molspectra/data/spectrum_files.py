"""Reading measured or simulated spectrum files into :class:`QuerySpectrum` records on the QM9S
grids: SchNetPack/ASE databases, ``.npy``/``.npz`` arrays, CSV files and JCAMP-DX files as
instruments and spectral libraries export them.

Every reader returns :class:`QuerySpectrum` records: a name, the spectra found for it
(modality -> float32 array on that modality's grid, :mod:`schnetpack_molspectra.spectra.grids`,
in the units of the file) and where they came from (``file:row``), plus the SMILES when the file
knows it.

Formats
-------
database (``.db``)
    a SchNetPack/ASE database with ``uv_spectrum`` (1, 701), ``ir_spectrum`` (1, 3501) and/or
    ``raman_spectrum`` (1, 3501) per row (``properties.py``); a row's name is its ``label``
    (else ``row <id>``), its SMILES the row key ``smiles`` if present.
``.npy``
    one array, (n, L) or (L,), on one modality's grid: ``modality`` says which; 701 points are
    UV, 3501 points need ``modality="ir"`` or ``"raman"``.
``.npz``
    arrays named ``uv``/``ir``/``raman`` (or ``uv_spectrum``/...), each (n, L), (n, 1, L) or
    (L,), all with the same n; optional ``names`` and ``smiles`` (n,).
CSV, one spectrum per row (``.csv``)
    each row holds the L values of one spectrum on the modality's grid, optionally preceded by a
    name column (any non-numeric first cell); an optional header row (non-numeric) is skipped.
    Modality: ``modality=``, else 701 values = UV; IR and Raman (3501) must be named.
CSV, two columns x,y (``.csv``)
    one spectrum per file, one point per row (any spacing, any order, any range). x is in the
    modality's unit (cm^-1 for IR/Raman, eV for UV) unless the x header names another one
    (``nm``, ``um``, ``eV``, ``cm-1``/``1/cm``/``wavenumber``); a y header of ``uv``/``ir``/
    ``raman`` gives the modality, ``transmittance``/``%T`` says the values are transmittance.
JCAMP-DX (``.jdx``, ``.dx``, ``.jcamp``; read with the ``jcamp`` package)
    ``##XYDATA=(X++(Y..Y))`` (AFFN or the compressed ASDF forms), ``##XYPOINTS=(XY..XY)``, or
    ``##PEAK TABLE=(XY..XY)`` (sticks, broadened with the simulator's Lorentzian widths: IR
    15 cm^-1, Raman 12 cm^-1, UV 0.2 eV). Compound files (``##DATA TYPE=LINK``) give one
    record whose spectra are the blocks'. The modality comes from ``##DATA TYPE`` (INFRARED,
    RAMAN, UV/VIS) or ``modality=``; units from ``##XUNITS``/``##YUNITS``.

Resampling of x,y data (CSV x,y and JCAMP-DX)
--------------------------------------------
1. x is converted to the grid unit: IR/Raman to cm^-1 (``um``: 10^4/x; ``nm``: 10^7/x), UV to
   eV (``nm``: E = 1239.84198/lambda; ``cm^-1``: x/8065.544). Intensities are not rescaled by
   the Jacobian of the conversion: absorbance and intensity are values at a point, not densities.
2. y: transmittance T (fraction, or percent when its maximum exceeds 1.5 or the unit says %)
   becomes absorbance ``A = -log10(T)`` (T clipped to [1e-6, 1]); absorbance, intensities,
   counts, molar absorptivities and arbitrary units are kept; negative values (baseline
   offsets) are set to 0.
3. The points are sorted by x and linearly interpolated onto the grid (``numpy.interp``); grid
   points outside the file's x range are 0 (no signal). The fraction of the grid the file
   covers is kept (``coverage``), and a spectrum that does not overlap its grid is an error.

Writing (:func:`write_spectra`, chosen by the suffix; ``spkspectra predict --out``)
------------------------------------------------------------------------------
``.npz``
    arrays ``uv``/``ir``/``raman`` (n, L) float32 of the modalities given, ``names`` and ``smiles``
    (n,), and each modality's grid as ``<m>_grid`` (L,) (the reader ignores the grids).
``.csv``
    one file per modality, ``<stem>_<m>.csv`` (``pred.csv`` -> ``pred_ir.csv``, ``pred_raman.csv``):
    a ``#`` comment line naming the modality, grid and unit, then one row per molecule: its name,
    then its L values (``%.9g``: float32 exactly). Read back with ``read_csv(path, modality=m)``.
    A name that the reader would take for a number (``12``, ``nan``) or an empty one is written
    as ``molecule <name>``.
JCAMP-DX ``.jdx``
    one compound file (``##DATA TYPE=LINK``) per molecule with one ``##XYDATA=(X++(Y..Y))`` block
    per modality (``INFRARED SPECTRUM``, ``RAMAN SPECTRUM`` in ``1/CM``, ``UV/VIS SPECTRUM`` in
    ``EV``; blocks written by ``jcamp.write``, Y to 1e-9 of the block's peak); ``##TITLE`` is the
    molecule's name. One molecule: the path given; several: ``<stem>_<i>.jdx``, i the row.

Every file is written to ``<path>.partial`` and renamed when complete: a killed run leaves no
half-written file. The writers store the values they are given; ``spkspectra predict`` gives
them the predicted area-normalised spectra scaled by :func:`rescale_to_reference` (peak at
:data:`REFERENCE_PEAK`), the intensity scale ``identify`` expects of the arrays and CSV rows.

Intensity scale: the databases and arrays are taken as in the units of the training data. x,y
data are in whatever units the instrument wrote, so :func:`rescale_to_reference` scales such a
spectrum to the peak height typical of the shipped training data (:data:`REFERENCE_PEAK`);
``identify`` does that by default for x,y formats only.
"""

import contextlib
import csv
import io
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from ase.db import connect

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.files import write_whole_file
from schnetpack_molspectra.spectra.broadening import DEFAULT_WIDTH, broaden
from schnetpack_molspectra.spectra.checks import SpectrumError, spectrum_problem
from schnetpack_molspectra.spectra.grids import GRIDS, SPECTRUM_LENGTHS

__all__ = [
    "QuerySpectrum",
    "REFERENCE_PEAK",
    "read_spectra",
    "read_db",
    "row_name",
    "read_array",
    "read_csv",
    "read_jcamp",
    "resample",
    "convert_x",
    "to_absorbance",
    "rescale_to_reference",
    "SPECTRA_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "write_spectra",
    "write_npz",
    "write_csv",
    "write_jcamp",
]

#: median peak height of each modality's spectra in the first 499 shipped QM9 molecules (GFN2-xTB IR km/mol
#: and Raman A^4/amu, sTDA UV oscillator strengths, broadened onto the QM9S grids; measured when the default
#: dataset had those 499): the scale x,y spectra are brought to before ``log10(1 + x)``
REFERENCE_PEAK = {"uv": 0.41, "ir": 11.1, "raman": 14.8}

HC_EV_NM = 1239.84198  # E (eV) * lambda (nm)
CM1_PER_EV = 8065.544
SPECTRA_EXTENSIONS = (".db", ".npy", ".npz", ".csv", ".jdx", ".dx", ".jcamp")
#: the formats :func:`write_spectra` writes, by suffix
WRITE_EXTENSIONS = (".npz", ".csv", ".jdx")


@dataclass
class QuerySpectrum:
    """The spectra of one unknown molecule (modality -> (L,) float32 on the grid)."""

    name: str
    spectra: Dict[str, np.ndarray]
    source: str
    smiles: Optional[str] = None
    #: True when the values came from x,y data in instrument units (CSV x,y, JCAMP-DX)
    external_units: bool = False
    #: modality -> fraction of the grid covered by the file's x range (x,y data only)
    coverage: Dict[str, float] = field(default_factory=dict)


def _check(values: np.ndarray, modality: str, where: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    problem = spectrum_problem(values, SPECTRUM_LENGTHS[modality], allow_negative=False)
    if problem is not None:
        grid = GRIDS[modality]
        raise SpectrumError(
            f"{where}: {modality} spectrum {problem} (the {modality} grid is {grid.start:g}-{grid.stop:g} "
            f"{grid.unit} in steps of {grid.step:g})"
        )
    return values.astype(np.float32)


def _modality_from_length(n: int, modality: Optional[str], where: str) -> str:
    if modality is not None:
        if modality not in msp.modalities:
            raise ValueError(f"unknown modality {modality!r}; choose from {msp.modalities}")
        return modality
    if n == SPECTRUM_LENGTHS["uv"]:
        return "uv"
    if n == SPECTRUM_LENGTHS["ir"]:
        raise SpectrumError(
            f"{where}: {n} points fit both the IR and the Raman grid; say which (modality='ir' or 'raman', --modality)"
        )
    raise SpectrumError(
        f"{where}: {n} points match no grid (UV {SPECTRUM_LENGTHS['uv']}, IR/Raman {SPECTRUM_LENGTHS['ir']}); "
        "give x,y data (two-column CSV, JCAMP-DX) to have it resampled"
    )


# ---------------------------------------------------------------- units and resampling
_X_UNITS = {
    "cm-1": ("1/cm", "cm-1", "cm^-1", "cm**-1", "cm⁻¹", "wavenumber", "wavenumbers", "raman shift", "1/centimeters"),
    "nm": ("nm", "nanometers", "nanometer", "nanometres", "wavelength"),
    "um": ("um", "µm", "μm", "micrometers", "micrometer", "microns", "micron"),
    "eV": ("ev", "electronvolt", "electronvolts", "electron volts", "energy"),
}


def parse_x_unit(text: Optional[str]) -> Optional[str]:
    """``cm-1``, ``nm``, ``um`` or ``eV`` for a header or JCAMP ``##XUNITS`` text; None if unknown."""
    t = (text or "").strip().lower()
    for unit in ("cm-1", "um", "nm", "eV"):  # "wavelength (um)" before the plain "wavelength" = nm
        for alias in _X_UNITS[unit]:
            if len(alias) <= 2 or alias in ("energy", "wavelength"):  # short words: whole words only
                if re.search(rf"(^|[^a-z]){re.escape(alias)}([^a-z]|$)", t):
                    return unit
            elif alias in t:
                return unit
    return None


def convert_x(x: np.ndarray, unit: str, modality: str) -> np.ndarray:
    """x in ``unit`` (``cm-1``, ``nm``, ``um``, ``eV``) to the grid unit of ``modality``
    (cm^-1 for IR/Raman, eV for UV)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        if modality == "uv":
            table = {"eV": x, "nm": HC_EV_NM / x, "um": HC_EV_NM / (1000.0 * x), "cm-1": x / CM1_PER_EV}
        else:
            table = {"cm-1": x, "um": 1e4 / x, "nm": 1e7 / x, "eV": x * CM1_PER_EV}
    if unit not in table:
        raise ValueError(f"unknown x unit {unit!r}; use cm-1, nm, um or eV")
    return table[unit]


def to_absorbance(y: np.ndarray, y_unit: Optional[str]) -> np.ndarray:
    """Transmittance (fraction or percent) -> absorbance ``-log10(T)``; other units unchanged."""
    y = np.asarray(y, dtype=np.float64)
    unit = (y_unit or "").strip().lower()
    if "transmit" in unit or unit in ("%t", "t", "%transmittance") or unit.startswith("%t"):
        percent = "%" in unit or "percent" in unit or np.nanmax(y) > 1.5
        t = y / 100.0 if percent else y
        return -np.log10(np.clip(t, 1e-6, 1.0))
    return y


def resample(x, y, modality: str, where: str = "spectrum"):
    """Linear interpolation of points (x in the grid unit) onto the modality's grid.

    Returns (values (L,) float32 with 0 outside the data's x range, fraction of the grid covered)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise SpectrumError(f"{where}: {x.size} x values but {y.size} y values")
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise SpectrumError(f"{where}: {int((~ok).sum())} non-finite x/y values (NaN/inf), first at point {first}")
    if x.size < 2:
        raise SpectrumError(f"{where}: needs at least 2 points, has {x.size}")
    order = np.argsort(x, kind="stable")
    x, y = x[order], np.clip(y[order], 0.0, None)
    grid = GRIDS[modality]
    g = grid.values()
    inside = (g >= x[0]) & (g <= x[-1])
    if not inside.any():
        raise SpectrumError(
            f"{where}: x range {x[0]:.4g}-{x[-1]:.4g} {grid.unit} (after unit conversion) does not overlap "
            f"the {modality} grid {grid.start:g}-{grid.stop:g} {grid.unit}; wrong modality or x unit?"
        )
    values = np.interp(g, x, y, left=0.0, right=0.0)
    return values.astype(np.float32), float(inside.mean())


def rescale_to_reference(values: np.ndarray, modality: str, reference: Optional[Dict[str, float]] = None) -> np.ndarray:
    """Scale a spectrum so its maximum is the typical training peak (:data:`REFERENCE_PEAK`)."""
    peak = float(np.max(values))
    if peak <= 0:
        return values
    return (values * ((reference or REFERENCE_PEAK)[modality] / peak)).astype(np.float32)


# ---------------------------------------------------------------- readers
def read_db(path: str, modality: Optional[str] = None) -> List[QuerySpectrum]:
    """Every row of a SchNetPack/ASE database with at least one spectrum (``modality``: only that one)."""
    wanted = [modality] if modality else list(msp.modalities)
    records = []
    with connect(path, use_lock_file=False) as db:
        for row in db.select():
            data = row.data
            found = {m: data[msp.spectrum_keys[m]] for m in wanted if msp.spectrum_keys[m] in data}
            where = f"{path}: row {row.id}"
            if not found:
                raise SpectrumError(
                    f"{where}: no spectra (expected some of {[msp.spectrum_keys[m] for m in wanted]}, has {sorted(data)})"
                )
            spectra = {m: _check(v, m, where) for m, v in found.items()}
            records.append(QuerySpectrum(row_name(row), spectra, where, smiles=row.get("smiles")))
    if not records:
        raise SpectrumError(f"{path}: database has no rows")
    return records


def row_name(row) -> str:
    """A database row's name: its ``label``, else ``gdb_<n>`` for a QM9 molecule (a database of ``spkspectra
    qm9`` or a spectra database: the ``gdb_index`` property), else ``row <id>``."""
    if row.get("label"):
        return str(row.get("label"))
    gdb = row.data.get(msp.gdb_index) if row.data else None
    return f"gdb_{int(np.ravel(gdb)[0])}" if gdb is not None and np.size(gdb) else f"row {row.id}"


def _rows(array: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 1:
        return a[None, :]
    if a.ndim == 3 and a.shape[1] == 1:
        return a[:, 0, :]
    if a.ndim != 2:
        raise SpectrumError(f"{where}: array of shape {a.shape}; expected (n, L), (n, 1, L) or (L,)")
    return a


def read_array(path: str, modality: Optional[str] = None) -> List[QuerySpectrum]:
    """Spectra on the grids from ``.npy`` (one modality) or ``.npz`` (arrays per modality)."""
    base = os.path.basename(path)
    if path.endswith(".npy"):
        rows = _rows(np.load(path, allow_pickle=False), path)
        m = _modality_from_length(rows.shape[1], modality, path)
        return [
            QuerySpectrum(f"{base}:{i}", {m: _check(r, m, f"{path}: row {i}")}, f"{path}: row {i}")
            for i, r in enumerate(rows)
        ]
    with np.load(path, allow_pickle=False) as f:
        arrays = {}
        for m in msp.modalities:
            for key in (m, msp.spectrum_keys[m]):
                if key in f.files:
                    arrays[m] = _rows(f[key], f"{path}: {key}")
        if modality is not None:
            arrays = {m: a for m, a in arrays.items() if m == modality}
        if not arrays:
            raise SpectrumError(f"{path}: no arrays named uv/ir/raman (or uv_spectrum, ...); has {f.files}")
        names = [str(s) for s in f["names"]] if "names" in f.files else None
        smiles = [str(s) for s in f["smiles"]] if "smiles" in f.files else None
    counts = {m: a.shape[0] for m, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise SpectrumError(f"{path}: modalities have different numbers of spectra {counts}")
    n = next(iter(counts.values()))
    records = []
    for i in range(n):
        where = f"{path}: row {i}"
        spectra = {m: _check(a[i], m, where) for m, a in arrays.items()}
        records.append(
            QuerySpectrum(names[i] if names else f"{base}:{i}", spectra, where, smiles=smiles[i] if smiles else None)
        )
    return records


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _modality_from_text(text: str) -> Optional[str]:
    t = text.lower()
    if "raman" in t:
        return "raman"
    if "infrared" in t or re.search(r"(^|[^a-z])(ir|ftir|ft-ir)([^a-z]|$)", t):
        return "ir"
    if re.search(r"(^|[^a-z])(uv|vis|uv/vis|uv-vis|ultraviolet)([^a-z]|$)", t):
        return "uv"
    return None


def read_csv(path: str, modality: Optional[str] = None) -> List[QuerySpectrum]:
    """A CSV file of spectra, one per row on the grid, or one spectrum as two columns x,y
    (module docstring). Comment lines start with ``#``."""
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t ")
        except csv.Error:
            dialect = csv.excel
        rows = [(n + 1, [c.strip() for c in r if c.strip() != ""]) for n, r in enumerate(csv.reader(f, dialect))]
    rows = [(n, r) for n, r in rows if r and not r[0].startswith("#")]
    if not rows:
        raise SpectrumError(f"{path}: no data rows")
    header = None
    if not all(_is_number(c) for c in rows[0][1][1:]) or (
        len(rows[0][1]) <= 2 and not all(_is_number(c) for c in rows[0][1])
    ):
        header, rows = rows[0][1], rows[1:]
    if not rows:
        raise SpectrumError(f"{path}: only a header, no data rows")
    width = max(len(r) for _, r in rows)
    if width <= 2:  # x,y
        x, y = [], []
        for line, r in rows:
            if len(r) != 2 or not all(_is_number(c) for c in r):
                raise SpectrumError(f"{path}: line {line}: expected two numbers x,y, got {r}")
            x.append(float(r[0]))
            y.append(float(r[1]))
        x_header = header[0] if header else ""
        y_header = header[1] if header and len(header) > 1 else ""
        m = modality or _modality_from_text(y_header)
        if m is None:
            raise SpectrumError(
                f"{path}: two-column x,y spectrum of unknown modality; name it (modality=..., --modality, or a y header uv/ir/raman)"
            )
        unit = parse_x_unit(x_header) or GRIDS[m].unit.replace("cm^-1", "cm-1")
        values, coverage = resample(convert_x(x, unit, m), to_absorbance(y, y_header), m, path)
        name = os.path.splitext(os.path.basename(path))[0]
        return [QuerySpectrum(name, {m: values}, path, external_units=True, coverage={m: coverage})]
    records = []
    base = os.path.splitext(os.path.basename(path))[0]
    for i, (line, r) in enumerate(rows):
        name = None
        if not _is_number(r[0]):
            name, r = r[0], r[1:]
        where = f"{path}: row {i} (line {line})"
        bad = [c for c in r if not _is_number(c)]
        if bad:
            raise SpectrumError(f"{where}: non-numeric value {bad[0]!r}")
        values = np.array([float(c) for c in r])
        m = (
            _modality_from_length(values.size, modality, where)
            if modality or values.size == SPECTRUM_LENGTHS["uv"]
            else None
        )
        if m is None:
            if values.size == SPECTRUM_LENGTHS["ir"]:
                m = _modality_from_length(values.size, None, where)  # raises: IR or Raman?
            raise SpectrumError(
                f"{where}: has {values.size} values, expected {SPECTRUM_LENGTHS['uv']} (UV) or "
                f"{SPECTRUM_LENGTHS['ir']} (IR/Raman) on the QM9S grids"
            )
        records.append(QuerySpectrum(name or f"{base}:{i}", {m: _check(values, m, where)}, where))
    return records


def _jcamp_block(block: dict, path: str, modality: Optional[str]):
    """(modality, values, coverage) of one JCAMP-DX data block."""
    where = f"{path} ({block.get('title', 'untitled')})" if block.get("title") else path
    m = modality or _modality_from_text(str(block.get("data type", block.get("datatype", ""))))
    x_unit = parse_x_unit(str(block.get("xunits", "")))
    if m is None and x_unit in ("nm", "eV"):
        m = "uv"
    if m is None:
        raise SpectrumError(
            f"{where}: cannot tell the modality (##DATA TYPE={block.get('data type', '?')!s}, ##XUNITS="
            f"{block.get('xunits', '?')!s}); name it (modality=..., --modality)"
        )
    if "x" not in block or "y" not in block or len(block["y"]) == 0:
        raise SpectrumError(f"{where}: no ##XYDATA, ##XYPOINTS or ##PEAK TABLE data")
    x, y = np.asarray(block["x"], dtype=np.float64), np.asarray(block["y"], dtype=np.float64)
    if x.size != y.size:
        raise SpectrumError(f"{where}: {x.size} x values but {y.size} y values (##NPOINTS={block.get('npoints', '?')})")
    if x_unit is None:
        x_unit = GRIDS[m].unit.replace("cm^-1", "cm-1")
    x = convert_x(x, x_unit, m)
    y = to_absorbance(y, str(block.get("yunits", "")))
    if "peak table" in block:  # sticks: broaden as the simulator does
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            raise SpectrumError(f"{where}: peak table has non-finite values")
        values = broaden(x, np.clip(y, 0, None), GRIDS[m], DEFAULT_WIDTH[m])[0]
        if values.max() <= 0:
            raise SpectrumError(f"{where}: no peak of the table lies on the {m} grid")
        return m, values, 1.0
    values, coverage = resample(x, y, m, where)
    return m, values, coverage


def read_jcamp(path: str, modality: Optional[str] = None) -> List[QuerySpectrum]:
    """One JCAMP-DX file (one record; a compound file's blocks are its modalities)."""
    try:
        import jcamp
    except ImportError as err:
        raise ImportError("reading JCAMP-DX needs the 'jcamp' package: pip install jcamp") from err

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its consistency checks
        try:
            data = jcamp.readfile(path)
        except Exception as err:
            raise SpectrumError(f"{path}: not a readable JCAMP-DX file ({type(err).__name__}: {err})") from err
    blocks = data.get("children") or [data]
    spectra, coverage = {}, {}
    for block in blocks:
        m, values, cov = _jcamp_block(block, path, modality if len(blocks) == 1 else None)
        if m in spectra:
            raise SpectrumError(f"{path}: two {m} blocks")
        spectra[m], coverage[m] = values, cov
    name = str(data.get("title") or os.path.splitext(os.path.basename(path))[0]).strip()
    return [QuerySpectrum(name, spectra, path, external_units=True, coverage=coverage)]


def read_spectra(path: str, modality: Optional[str] = None) -> List[QuerySpectrum]:
    """Spectra from any supported file, chosen by extension (module docstring)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"spectra file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".db":
        return read_db(path, modality)
    if ext in (".npy", ".npz"):
        return read_array(path, modality)
    if ext in (".csv", ".tsv", ".txt"):
        return read_csv(path, modality)
    if ext in (".jdx", ".dx", ".jcamp", ".jcm"):
        return read_jcamp(path, modality)
    raise ValueError(f"{path}: unknown spectra format {ext!r}; use one of {', '.join(SPECTRA_EXTENSIONS)}")


# ---------------------------------------------------------------- writers
#: JCAMP-DX ``##DATA TYPE`` and ``##XUNITS`` of each modality's block (what :func:`read_jcamp` reads back)
JCAMP_BLOCKS = {
    "uv": ("UV/VIS SPECTRUM", "EV", "ARBITRARY UNITS"),
    "ir": ("INFRARED SPECTRUM", "1/CM", "ABSORBANCE"),
    "raman": ("RAMAN SPECTRUM", "1/CM", "ARBITRARY UNITS"),
}


def _checked_rows(spectra: Dict[str, np.ndarray], names, smiles) -> tuple:
    """(spectra as (n, L) float32 per modality in the order of ``msp.modalities``, names, smiles), checked."""
    if not spectra:
        raise ValueError("no spectra to write")
    names = [str(n) for n in names]
    rows = {}
    for m in msp.modalities:
        if m not in spectra:
            continue
        a = np.asarray(spectra[m], dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != SPECTRUM_LENGTHS[m]:
            raise ValueError(f"{m} spectra of shape {a.shape}; expected (n, {SPECTRUM_LENGTHS[m]}) on the {m} grid")
        if a.shape[0] != len(names):
            raise ValueError(f"{a.shape[0]} {m} spectra but {len(names)} names")
        for i, r in enumerate(a):
            problem = spectrum_problem(r, SPECTRUM_LENGTHS[m], allow_negative=False)
            if problem is not None:
                raise SpectrumError(f"{m} spectrum {i} ({names[i]}) {problem}")
        rows[m] = a
    unknown = sorted(set(spectra) - set(rows))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {msp.modalities}")
    smiles = [""] * len(names) if smiles is None else ["" if s is None else str(s) for s in smiles]
    if len(smiles) != len(names):
        raise ValueError(f"{len(smiles)} SMILES but {len(names)} names")
    return rows, names, smiles


def _write_whole(path: str, write) -> str:
    """``write(file)`` into ``<path>.partial``, renamed to ``path`` when done (removed on failure:
    :func:`~schnetpack_molspectra.data.files.write_whole_file`), its folder made first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return write_whole_file(path, write)


def write_npz(path: str, spectra: Dict[str, np.ndarray], names, smiles=None) -> List[str]:
    """One ``.npz``: ``<m>`` (n, L) float32 per modality, ``names``, ``smiles`` (n,) and ``<m>_grid`` (L,)
    (module docstring); read back by :func:`read_array`. Returns ``[path]``."""
    rows, names, smiles = _checked_rows(spectra, names, smiles)
    arrays = dict(rows)
    arrays.update({f"{m}_grid": GRIDS[m].values() for m in rows})
    arrays["names"] = np.array(names, dtype=str)
    arrays["smiles"] = np.array(smiles, dtype=str)
    return [_write_whole(path, lambda f: np.savez(f, **arrays))]


def csv_paths(path: str, modalities) -> Dict[str, str]:
    """Where :func:`write_csv` writes each modality: ``pred.csv`` -> ``pred_ir.csv``, ..."""
    stem, ext = os.path.splitext(path)
    return {m: f"{stem}_{m}{ext or '.csv'}" for m in modalities}


def _csv_name(name: str) -> str:
    """A row name :func:`read_csv` reads back as a name: not empty, not a number, one line."""
    name = " ".join(name.split())
    return f"molecule {name}".strip() if not name or _is_number(name) else name


def write_csv(path: str, spectra: Dict[str, np.ndarray], names, smiles=None) -> List[str]:
    """One CSV per modality (:func:`csv_paths`): a ``#`` comment naming the grid and its unit, then
    one row per molecule, its name and its L values; read back by ``read_csv(file, modality=m)``.
    ``smiles`` are not written (CSV rows carry a name only). Returns the files written."""

    rows, names, _ = _checked_rows(spectra, names, smiles)
    written = []
    for m, file in csv_paths(path, rows).items():
        grid = GRIDS[m]
        text = io.StringIO()
        text.write(
            f"# {m} spectra on the grid {grid.start:g}-{grid.stop:g} {grid.unit} in steps of {grid.step:g} "
            f"({grid.n_points} values per row); one row per molecule: name then values\n"
        )
        writer = csv.writer(text, lineterminator="\n")
        for name, values in zip(names, rows[m]):
            writer.writerow([_csv_name(name)] + [f"{v:.9g}" for v in values.tolist()])
        data = text.getvalue().encode()
        written.append(_write_whole(file, lambda f, data=data: f.write(data)))
    return written


def jcamp_paths(path: str, n: int) -> List[str]:
    """Where :func:`write_jcamp` writes ``n`` molecules: ``path`` for one, ``<stem>_<i><ext>`` for several."""
    if n == 1:
        return [path]
    stem, ext = os.path.splitext(path)
    return [f"{stem}_{i}{ext or '.jdx'}" for i in range(n)]


def _jcamp_text(name: str, spectra: Dict[str, np.ndarray]) -> str:
    """A compound JCAMP-DX file (``##DATA TYPE=LINK``) with one block per modality."""

    try:
        import jcamp
    except ImportError as err:
        raise ImportError("writing JCAMP-DX needs the 'jcamp' package: pip install jcamp") from err
    title = " ".join(name.split()) or "molecule"
    out = [f"##TITLE={title}", "##JCAMP-DX=5.01", "##DATA TYPE=LINK", f"##BLOCKS={len(spectra)}"]
    for block, (m, values) in enumerate(spectra.items(), start=1):
        data_type, x_units, y_units = JCAMP_BLOCKS[m]
        peak = float(np.max(values))
        # jcamp.write prints Y / YFACTOR with 4 decimals: Y up to 1e5 keeps 9 significant digits of the peak
        y_factor = float(f"{peak / 1e5:.6e}") if peak > 0 else 1.0
        header = {
            "title": f"{title} {m}",
            "data type": data_type,
            "block_id": block,
            "xunits": x_units,
            "yunits": y_units,
            "xfactor": 1,
            "yfactor": y_factor,
            "x": GRIDS[m].values(),
            "y": values.astype(np.float64),
        }
        with contextlib.redirect_stdout(io.StringIO()):  # jcamp.write prints a debug line per point
            text = jcamp.write(header, linewidth=80)
        lines, seen = [], set()
        for line in reversed(text.splitlines()):  # XFACTOR/YFACTOR come twice (the dict's and jcamp's): once
            if line.startswith(("##XFACTOR=", "##YFACTOR=")) and line in seen:
                continue
            seen.add(line)
            lines.insert(0, line)
        # jcamp.write starts with ##JCAMP-DX; a block of a compound file starts with its ##TITLE
        title_line = next(i for i, line in enumerate(lines) if line.startswith("##TITLE="))
        lines.insert(0, lines.pop(title_line))
        out.extend(lines)
    out.append("##END=")
    return "\n".join(out) + "\n"


def write_jcamp(path: str, spectra: Dict[str, np.ndarray], names, smiles=None) -> List[str]:
    """One compound JCAMP-DX file per molecule (:func:`jcamp_paths`), one block per modality,
    read back by :func:`read_jcamp` (module docstring). ``smiles`` are not written. Returns the files."""
    rows, names, _ = _checked_rows(spectra, names, smiles)
    written = []
    for i, file in enumerate(jcamp_paths(path, len(names))):
        data = _jcamp_text(names[i], {m: a[i] for m, a in rows.items()}).encode()
        written.append(_write_whole(file, lambda f, data=data: f.write(data)))
    return written


def write_spectra(path: str, spectra: Dict[str, np.ndarray], names, smiles=None) -> List[str]:
    """Write spectra on the grids, ``spectra[m]`` (n, L) per modality with ``names`` (and ``smiles``)
    of the n molecules, in the format of ``path``'s suffix (:data:`WRITE_EXTENSIONS`; module
    docstring): :func:`write_npz`, :func:`write_csv` or :func:`write_jcamp`. The values are written
    as given. Returns the files written.

    Raises:
        ValueError: an unknown suffix, or spectra that do not fit their grid, the names, or are
            negative or non-finite (:class:`SpectrumError`, naming the molecule).
    """
    ext = os.path.splitext(path)[1].lower()
    writers = {".npz": write_npz, ".csv": write_csv, ".jdx": write_jcamp}
    if ext not in writers:
        raise ValueError(f"{path}: cannot write spectra as {ext or 'a file without suffix'}; use .npz, .csv or .jdx")
    return writers[ext](path, spectra, names, smiles)
