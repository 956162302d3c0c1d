"""Patch geometry: how a spectrum is cut into the overlapping patches SpecFormer embeds.

A spectrum of L grid points is cut by ``unfold(P, D)`` into N = floor((L - P) / D) + 1
patches of P points, D points apart. The defaults are the released code's: P = 20, 50, 50
and D = 10, 25, 25 for UV, IR, Raman, i.e. 69 + 139 + 139 = 347 patches on the QM9S grids
(the paper's text says P = 20, D = 10 for all three). ``SpecFormer`` and
``MaskSpectraPatches`` must be given the same geometry (the configs write it once, in the model).
"""

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

from schnetpack_molspectra.properties import modalities as all_modalities

from .grids import SPECTRUM_LENGTHS

__all__ = ["PATCH_LENGTH", "PATCH_STRIDE", "PatchGeometry", "n_patches", "patch_geometry"]

#: default patch length P per modality (grid points), as released
PATCH_LENGTH: Dict[str, int] = dict(zip(all_modalities, (20, 50, 50)))
#: default patch stride D per modality (grid points), as released
PATCH_STRIDE: Dict[str, int] = dict(zip(all_modalities, (10, 25, 25)))


def n_patches(length: int, patch_length: int, stride: int) -> int:
    """Number of patches ``unfold(patch_length, stride)`` cuts from ``length`` points."""
    if patch_length > length:
        raise ValueError(f"patch length {patch_length} exceeds spectrum length {length}")
    return (length - patch_length) // stride + 1


@dataclass(frozen=True)
class PatchGeometry:
    """How one modality's spectrum is patched (all in grid points)."""

    spectrum_length: int  # L
    patch_length: int  # P
    patch_stride: int  # D

    @property
    def n_patches(self) -> int:
        """N; raises ValueError for a patch longer than its spectrum."""
        return n_patches(self.spectrum_length, self.patch_length, self.patch_stride)


def patch_geometry(
    modalities: Sequence[str] = all_modalities,
    patch_length: Optional[Mapping[str, int]] = None,
    patch_stride: Optional[Mapping[str, int]] = None,
    spectrum_length: Optional[Mapping[str, int]] = None,
) -> Dict[str, PatchGeometry]:
    """The geometry of each of ``modalities``; a table not given is the default
    (:data:`PATCH_LENGTH`, :data:`PATCH_STRIDE`, the QM9S grid lengths)."""
    patch_length = dict(patch_length or PATCH_LENGTH)
    patch_stride = dict(patch_stride or PATCH_STRIDE)
    spectrum_length = dict(spectrum_length or SPECTRUM_LENGTHS)
    return {m: PatchGeometry(int(spectrum_length[m]), int(patch_length[m]), int(patch_stride[m])) for m in modalities}
