"""Keys of the properties MolSpectra adds to SchNetPack's input/output dicts.

Every key MolSpectra reads or writes lives here, as ``schnetpack.properties`` does for
SchNetPack's own; import it as ``import schnetpack_molspectra.properties as msp``. The
*values* are stored in databases and in saved models' output lists: never change them.
"""

from typing import Final, Tuple

## broadened spectra, one row per molecule (float32), on the QM9S grids (spectra/grids.py)
#: UV-Vis absorption, (1, 701) per molecule, 1-15 eV in steps of 0.02 eV, arbitrary units
uv_spectrum: Final[str] = "uv_spectrum"
#: IR absorption, (1, 3501) per molecule, 500-4000 cm^-1 in steps of 1 cm^-1, arbitrary units
ir_spectrum: Final[str] = "ir_spectrum"
#: Raman activity, (1, 3501) per molecule, 500-4000 cm^-1 in steps of 1 cm^-1, arbitrary units
raman_spectrum: Final[str] = "raman_spectrum"

#: the spectra modalities, in SpecFormer's token order (UV, IR, Raman); every other
#: per-modality table (grids, patch geometry, configs) is keyed by these names
modalities: Final[Tuple[str, ...]] = ("uv", "ir", "raman")
#: modality name -> property key of its broadened spectrum, in ``modalities`` order
spectrum_keys = dict(zip(modalities, (uv_spectrum, ir_spectrum, raman_spectrum)))

## stick spectra from the simulator (variable length per molecule, float32)
#: harmonic frequencies (cm^-1), (n_modes,)
vib_frequencies: Final[str] = "vib_frequencies"
#: IR intensities (km/mol), (n_modes,)
ir_intensities: Final[str] = "ir_intensities"
#: Raman activities (A^4/amu), (n_modes,)
raman_activities: Final[str] = "raman_activities"
#: excitation energies (eV), (n_states,)
uv_energies: Final[str] = "uv_energies"
#: oscillator strengths (dimensionless), (n_states,)
uv_strengths: Final[str] = "uv_strengths"

#: number of vibrational modes (IR and Raman sticks) of each molecule, (1,) int64 (``CountSticks``)
n_vib_sticks: Final[str] = "n_vib_sticks"
#: number of UV states of each molecule, (1,) int64 (``CountSticks``)
n_uv_sticks: Final[str] = "n_uv_sticks"

## identifiers and QM9 extras
#: QM9/GDB-9 index (the n of gdb_n), (1,), int64
gdb_index: Final[str] = "gdb_index"
#: QM9's DFT harmonic frequencies (cm^-1), (n_modes,)
harmonic_frequencies: Final[str] = "harmonic_frequencies"

## written by SchNetPack representations (SchNetPack has no constant for them)
#: per-atom scalar features, (n_atoms, n_atom_basis)
scalar_representation: Final[str] = "scalar_representation"
#: per-atom vector features of PaiNN / SO3net, (n_atoms, 3, n_atom_basis)
vector_representation: Final[str] = "vector_representation"

## pre-training inputs written by transforms
#: Gaussian noise added to the positions, the denoising target (Angstrom), (n_atoms, 3)
position_noise: Final[str] = "position_noise"


def patch_mask(modality: str) -> str:
    """Key of the boolean patch mask of one modality, (1, n_patches) per molecule, True = masked."""
    return f"{modality}_patch_mask"


def modality_dropped(modality: str) -> str:
    """Key of the modality-dropout flag of one modality, (1,) bool per molecule, True = the molecule's
    spectrum of that modality is withheld (fed to SpecFormer as a missing one: zeros, every patch masked)."""
    return f"{modality}_dropped"


def modality_missing(modality: str) -> str:
    """Key of the flag a database stores for molecules that have no spectrum of one modality, (1,)
    bool per molecule (e.g. IR and Raman computed, UV not). Where it is True the modality is withheld
    as modality dropout withholds it (``modality_dropped``), whatever the dropout draws."""
    return f"{modality}_missing"


## model outputs
#: predicted per-atom noise, in units of the denoising head's running noise scale, (n_atoms, 3)
predicted_noise: Final[str] = "predicted_noise"
#: ``position_noise`` divided by the running noise scale (dimensionless), (n_atoms, 3)
noise_target: Final[str] = "noise_target"
#: pooled 3D representation, (n_molecules, n_atom_basis)
representation_3d: Final[str] = "representation_3d"
#: SpecFormer representation, (n_molecules, n_out)
representation_spectra: Final[str] = "representation_spectra"


def reconstructed_patches(modality: str) -> str:
    """Key of the reconstructed patches of one modality at the masked positions,
    (n_masked_patches, patch_length); every patch when the batch has no mask."""
    return f"{modality}_reconstruction"


def target_patches(modality: str) -> str:
    """Key of the clean normalised patches of one modality at the masked positions,
    (n_masked_patches, patch_length); every patch when the batch has no mask."""
    return f"{modality}_target_patches"
