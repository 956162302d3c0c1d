"""Names of the properties MolSpectra adds to SchNetPack's input/output dicts.

Keep every key in one place, as ``schnetpack.properties`` does, and import it as
``import schnetpack_molspectra.properties as msp``.
"""

# --- broadened spectra, one row per molecule (float32) ---
uv_spectrum = "uv_spectrum"  #: UV-Vis absorption, shape (1, 701) per molecule, 1-15 eV
ir_spectrum = "ir_spectrum"  #: IR absorption, shape (1, 3501) per molecule, 500-4000 cm^-1
raman_spectrum = "raman_spectrum"  #: Raman activity, shape (1, 3501) per molecule, 500-4000 cm^-1

#: modality name -> property key, in SpecFormer's token order (UV, IR, Raman)
spectra = {"uv": uv_spectrum, "ir": ir_spectrum, "raman": raman_spectrum}

# --- stick spectra from the simulator (variable length per molecule) ---
vib_frequencies = "vib_frequencies"  #: harmonic frequencies (cm^-1), shape (n_modes,)
ir_intensities = "ir_intensities"  #: IR intensities (km/mol), shape (n_modes,)
raman_activities = "raman_activities"  #: Raman activities (A^4/amu), shape (n_modes,)
uv_energies = "uv_energies"  #: excitation energies (eV), shape (n_states,)
uv_strengths = "uv_strengths"  #: oscillator strengths, shape (n_states,)

# --- identifiers ---
gdb_index = "gdb_index"  #: QM9/GDB-9 index (the n of gdb_n), shape (1,)
harmonic_frequencies = "harmonic_frequencies"  #: QM9 DFT harmonic frequencies (cm^-1)

# --- pre-training inputs/targets written by transforms ---
clean_positions = "clean_positions"  #: positions before noise (Angstrom), (n_atoms, 3)
position_noise = "position_noise"  #: added Gaussian noise, the denoising target (Angstrom), (n_atoms, 3)


def patch_mask(modality: str) -> str:
    """Key of the boolean patch mask of one modality, shape (1, n_patches), True = masked."""
    return f"{modality}_patch_mask"


# --- model outputs ---
denoised_noise = "predicted_noise"  #: predicted per-atom noise, (n_atoms, 3)
representation_3d = "representation_3d"  #: pooled 3D representation, (n_molecules, n_features)
representation_spectra = "representation_spectra"  #: SpecFormer representation, (n_molecules, n_features)


def reconstructed_patches(modality: str) -> str:
    """Key of the reconstructed patches of one modality, shape (n_molecules, n_patches, patch_len)."""
    return f"{modality}_reconstruction"


def target_patches(modality: str) -> str:
    """Key of the clean normalised patches of one modality, shape (n_molecules, n_patches, patch_len)."""
    return f"{modality}_target_patches"
