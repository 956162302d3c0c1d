"""Datasets and builders: DataModules, QM9 offline (qm9pack), the QM9S converter, MD17 data and
xTB MD, the spectra simulator and the embedded default dataset. Import the submodules directly."""
