"""``MolSpectraDataModule``: SchNetPack's ``AtomsDataModule`` for databases with spectra."""
import os
from typing import List, Optional, Sequence

from schnetpack.data import ASEAtomsData, AtomsDataModule

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.spectra.checks import SpectrumError
from schnetpack_molspectra.specformer import DEFAULT_MODALITIES

__all__ = ["MolSpectraDataModule"]


class MolSpectraDataModule(AtomsDataModule):
    """An ``AtomsDataModule`` that loads the spectra of ``modalities`` and checks they exist.

    Args:
        datapath: SchNetPack ASE database with ``uv_spectrum``/``ir_spectrum``/``raman_spectrum``.
            ``None`` uses the embedded default dataset (simulated spectra for a fixed QM9
            subset), built once into the cache on first use.
        modalities: spectra to load (subset of uv, ir, raman); an empty list loads none
            (denoising-only pre-training on any 3D dataset).
        load_properties: further properties to load (e.g. QM9 labels); spectra are added.
        **kwargs: passed to ``AtomsDataModule`` (batch_size, num_train, transforms, ...).
    """

    def __init__(
        self,
        datapath: Optional[str] = None,
        modalities: Sequence[str] = DEFAULT_MODALITIES,
        load_properties: Optional[List[str]] = None,
        **kwargs,
    ):
        self.modalities = list(modalities)
        self.uses_default_dataset = datapath is None
        if self.uses_default_dataset:
            from schnetpack_molspectra.data.default import default_dataset_path

            datapath = default_dataset_path()
        properties = [msp.spectra[m] for m in self.modalities] + list(load_properties or [])
        super().__init__(datapath=str(datapath), load_properties=properties, **kwargs)

    def prepare_data(self):
        if self.uses_default_dataset:
            from schnetpack_molspectra.data.default import ensure_default_dataset

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
        super().setup(stage)
