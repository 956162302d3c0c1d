"""Datasets and builders: DataModules, QM9 offline (qm9pack), its target table and xyz archive
reader, the QM9S converter, MD17 data and xTB MD, the spectra simulator, the embedded default
dataset and the readers of spectrum files. Import the submodules directly."""
