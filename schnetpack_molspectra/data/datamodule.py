"""DataModules: ``MolSpectraDataModule`` (databases with spectra), ``QM9DataModule`` (QM9, offline) and
``MD17DataModule`` (energies + forces)."""

import os
from typing import List, Optional, Sequence

from ase.db import connect
from schnetpack import properties as structure
from schnetpack.data import ASEAtomsData, AtomsDataModule
from schnetpack.data.splitting import RandomSplit, absolute_split_sizes
from schnetpack.datasets import QM9

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.default import cache_dir, default_dataset_path, ensure_default_dataset, qm9_dataset_path
from schnetpack_molspectra.data.md17 import MD17_SMILES, generate_xtb_md, npz_to_db
from schnetpack_molspectra.data.qm9 import build_qm9_db
from schnetpack_molspectra.data.tblite_process import run_spkspectra, tblite_loads
from schnetpack_molspectra.spectra.checks import SpectrumError

__all__ = ["MolSpectraDataModule", "QM9DataModule", "MD17DataModule", "BoundedTestSplit"]


class BoundedTestSplit(RandomSplit):
    """SchNetPack's random split whose test partition takes at most what train and
    validation leave, so a bounded ``num_test`` (e.g. qm9_finetune's 10,831, the paper's test
    set on full QM9) also works on a smaller database. Where train + validation ask for more
    than the database holds, the later splits come out short or empty (``check_split`` names them)."""

    def split(self, dataset, *split_sizes):
        n = len(dataset)
        sizes = absolute_split_sizes(n, split_sizes)
        if len(sizes) == 3:
            sizes[0] = min(sizes[0], n)
            sizes[1] = min(sizes[1], n - sizes[0])
            sizes[2] = min(sizes[2], n - sizes[0] - sizes[1])
        return super().split(dataset, *sizes)


def check_split(dm: AtomsDataModule) -> None:
    """Refuse an empty training or validation split (e.g. num_train + num_val > molecules)."""
    sizes = {"train": len(dm.train_idx), "val": len(dm.val_idx)}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise ValueError(
            f"{dm.datapath}: the {' and '.join(empty)} split is empty ({len(dm.dataset)} molecules, "
            f"num_train={dm.num_train}, num_val={dm.num_val})"
        )


class MolSpectraDataModule(AtomsDataModule):
    """An ``AtomsDataModule`` that loads the spectra of ``modalities`` and checks they exist.

    Args:
        datapath: SchNetPack ASE database with ``uv_spectrum``/``ir_spectrum``/``raman_spectrum``.
            ``None`` uses the embedded default dataset (simulated spectra for a fixed QM9
            subset), built once into the cache on first use.
        modalities: spectra to load (subset of uv, ir, raman); an empty list loads none
            (denoising-only pre-training on any 3D dataset).
        load_properties: further properties to load (e.g. QM9 labels); spectra are added, and where
            the database has them the stick spectra and missing-modality flags (:meth:`optional_properties`).
        **kwargs: passed to ``AtomsDataModule`` (batch_size, num_train, transforms, ...).
    """

    def __init__(
        self,
        datapath: Optional[str] = None,
        modalities: Sequence[str] = msp.modalities,
        load_properties: Optional[List[str]] = None,
        **kwargs,
    ):
        self.modalities = list(modalities)
        self.uses_default_dataset = datapath is None
        if self.uses_default_dataset:
            datapath = default_dataset_path()
        properties = [msp.spectrum_keys[m] for m in self.modalities] + list(load_properties or [])
        super().__init__(datapath=str(datapath), load_properties=properties, **kwargs)

    def optional_properties(self) -> List[str]:
        """Loaded where the database has them: the modalities' stick spectra (for the spectra
        augmentation) and the flags of molecules that lack a modality (``modality_missing``)."""
        sticks = {msp.uv_energies, msp.uv_strengths} if "uv" in self.modalities else set()
        if {"ir", "raman"} & set(self.modalities):
            sticks |= {msp.vib_frequencies, msp.ir_intensities, msp.raman_activities}
        return sorted(sticks) + [msp.modality_missing(m) for m in self.modalities]

    def prepare_data(self):
        if self.uses_default_dataset:
            ensure_default_dataset(self.datapath)
        elif not os.path.exists(self.datapath):
            raise FileNotFoundError(f"spectra database {self.datapath} does not exist")

    def setup(self, stage: Optional[str] = None):
        if not os.path.exists(self.datapath):
            self.prepare_data()
        if self.dataset is None:
            available = set(ASEAtomsData(self.datapath).available_properties)
            missing = [p for p in self.load_properties if p not in available]
            if missing:
                raise SpectrumError(
                    f"{self.datapath}: database has no {missing} (it has {sorted(available)}); "
                    "build one with `spkspectra simulate`"
                )
            optional = [p for p in self.optional_properties() if p in available and p not in self.load_properties]
            self.load_properties = list(self.load_properties) + optional
        super().setup(stage)
        check_split(self)


class QM9DataModule(QM9):
    """``schnetpack.datasets.QM9`` that never downloads: a database that is not there is written from
    the ``qm9pack`` package (all 130,831 molecules, SchNetPack's names, units and atom references;
    about a minute), and ``datapath=None`` is QM9 built once into the cache
    (:func:`schnetpack_molspectra.data.default.qm9_dataset_path`). An existing ``datapath`` (a database
    of ``spkspectra qm9`` or SchNetPack's own ``qm9.db``) is used as it is.
    """

    def __init__(self, datapath: Optional[str] = None, **kwargs):
        if datapath is None:
            datapath = qm9_dataset_path()
        super().__init__(datapath, **kwargs)

    def prepare_data(self):
        if not os.path.exists(self.datapath):
            folder = os.path.dirname(os.path.abspath(self.datapath))
            os.makedirs(folder, exist_ok=True)
            build_qm9_db(self.datapath)
        super().prepare_data()


class MD17DataModule(AtomsDataModule):
    """Energies and forces of one molecule, MD17 style, from wherever the user has them.

    Args:
        molecule: one of the eight MD17 molecules (aspirin, ..., uracil) or a structure file.
        datapath: a SchNetPack db with ``energy``/``forces``, a real MD17 ``.npz`` (converted
            once into the cache), or None: GFN2-xTB MD at 500 K generated once into the cache
            (``n_frames`` frames; see ``spkspectra md``).
        n_frames, temperature: size and temperature of the generated xTB data.
        energy_key, forces_key: the database's names of energies and forces (generated and
            converted data use SchNetPack's, ``energy`` and ``forces``).
        energy_unit, forces_unit: the units they are loaded in.
    """

    def __init__(
        self,
        molecule: str,
        datapath: Optional[str] = None,
        n_frames: int = 1000,
        temperature: float = 500.0,
        energy_key: str = structure.energy,
        forces_key: str = structure.forces,
        energy_unit: str = "kcal/mol",
        forces_unit: str = "kcal/mol/Ang",
        **kwargs,
    ):
        if molecule not in MD17_SMILES and not os.path.exists(str(molecule)):
            raise ValueError(
                f"unknown MD17 molecule {molecule!r}; choose one of {sorted(MD17_SMILES)} or give a structure file"
            )
        self.molecule, self.n_frames, self.temperature = molecule, n_frames, temperature
        self.energy_key, self.forces_key = energy_key, forces_key
        kwargs["property_units"] = {
            energy_key: energy_unit,
            forces_key: forces_unit,
            **(kwargs.get("property_units") or {}),
        }
        self.source = None
        if datapath is None:
            name = os.path.splitext(os.path.basename(str(molecule)))[0]
            datapath = os.path.join(cache_dir(), f"md17_xtb_{name}_{int(temperature)}K_{n_frames}.db")
            self.source = "xtb"
        elif str(datapath).endswith(".npz"):
            self.source = str(datapath)
            stem = os.path.splitext(os.path.basename(str(datapath)))[0]
            datapath = os.path.join(cache_dir(), f"{stem}.db")
        super().__init__(datapath=str(datapath), **kwargs)

    def prepare_data(self):
        if os.path.exists(self.datapath) and (self.source != "xtb" or self._frames() >= self.n_frames):
            return  # a generation killed part-way (frames are written as they come) is continued below
        os.makedirs(os.path.dirname(os.path.abspath(self.datapath)), exist_ok=True)
        if self.source is None:
            raise FileNotFoundError(f"MD17 database {self.datapath} does not exist")
        if self.source != "xtb":
            npz_to_db(self.source, self.datapath)
        elif not tblite_loads():
            run_spkspectra(
                "md",
                str(self.molecule),
                self.datapath,
                "--frames",
                str(self.n_frames),
                "--temperature",
                str(self.temperature),
            )
        else:
            generate_xtb_md(self.molecule, self.datapath, self.n_frames, self.temperature)

    def _frames(self) -> int:
        with connect(self.datapath, use_lock_file=False) as conn:
            return conn.count()

    def setup(self, stage: Optional[str] = None):
        self.prepare_data()
        if self.dataset is None:
            available = set(ASEAtomsData(self.datapath).available_properties)
            missing = [p for p in (self.energy_key, self.forces_key) if p not in available]
            if missing:
                raise ValueError(
                    f"{self.datapath}: database has no {missing} (it has {sorted(available)}); md17 needs energies and forces"
                )
        super().setup(stage)
        check_split(self)
