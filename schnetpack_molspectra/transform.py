"""SchNetPack preprocessing transforms for MolSpectra (applied to one molecule at a time).

Order in a data config: ``ValidateSpectra`` -> ``NormalizeSpectra`` -> ``MaskSpectraPatches``
-> ``GaussianCoordinateNoise`` -> neighbour list -> ``CastTo32``.

Random draws (patch masks, coordinate noise) come from torch's global generator in a single
process, as before; under distributed training from :func:`rank_generator`, so that every rank
masks and perturbs differently while a run stays reproducible with ``seed=...``.
"""

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from schnetpack import properties as structure
from schnetpack.transform import ScaleProperty, Transform

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.spectra.checks import SpectrumError, spectrum_problem
from schnetpack_molspectra.spectra.grids import SPECTRUM_LENGTHS
from schnetpack_molspectra.spectra.patches import patch_geometry

__all__ = [
    "ValidateSpectra",
    "NormalizeSpectra",
    "MaskSpectraPatches",
    "GaussianCoordinateNoise",
    "StandardizeProperty",
    "rank_generator",
]

_MASK64 = (1 << 64) - 1


def _mix(value: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit function of ``value``."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


def rank_generator() -> Optional[torch.Generator]:
    """Where a transform's random draws come from.

    None (torch's global generator, as always) in a single process or a world of one. Under
    ``torch.distributed`` with several ranks: a CPU generator seeded from one 63-bit draw of the
    global generator mixed with the global rank. Every rank starts from the same seed (``spktrain``
    seeds all ranks alike, and ``MolSpectraTask`` makes sure of it), so without the rank every rank
    would mask and perturb its molecules with the same stream; with it the streams differ, while
    the global generator (``seed=...``, Lightning's per-worker seeding of dataloader workers with
    ``seed_everything(workers=True)``) still decides everything, so runs stay reproducible.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    draw = int(torch.randint(0, 2**63 - 1, (1,)))
    return torch.Generator().manual_seed(_mix(draw ^ _mix(dist.get_rank() + 1)) >> 1)


class ValidateSpectra(Transform):
    """Raise :class:`SpectrumError` for a missing, wrong-length, non-finite or negative spectrum.

    The message names the database file, the molecule index and the problem.
    """

    is_preprocessor = True
    is_postprocessor = False

    def __init__(
        self,
        modalities: Sequence[str] = msp.modalities,
        spectrum_length: Optional[Mapping[str, int]] = None,
        allow_negative: bool = False,
        source: str = "dataset",
    ):
        super().__init__()
        self.modalities = list(modalities)
        self.spectrum_length = dict(spectrum_length or SPECTRUM_LENGTHS)
        self.allow_negative = allow_negative
        self.source = source

    def datamodule(self, value):
        self.source = str(getattr(value, "datapath", self.source))

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        index = int(inputs[structure.idx]) if structure.idx in inputs else "?"
        for m in self.modalities:
            key = msp.spectrum_keys[m]
            if key not in inputs:
                raise SpectrumError(
                    f"{self.source}: molecule {index}: {m} spectrum '{key}' is missing "
                    f"(loaded properties: {sorted(k for k in inputs if not k.startswith('_'))})"
                )
            problem = spectrum_problem(inputs[key], self.spectrum_length[m], self.allow_negative)
            if problem is not None:
                raise SpectrumError(f"{self.source}: molecule {index}: {m} spectrum {problem}")
        return inputs


class NormalizeSpectra(Transform):
    """Normalise intensities in place: ``log10(1 + scale * x)`` (``method="log10"``),
    ``log(1 + scale * x)`` (``"log"``) or ``scale * x`` (``"none"``).

    Args:
        modalities: which spectra to normalise.
        scale: per-modality factor applied before the log (QM9S UV intensities are ~1e-4,
            so ``log10(1 + x)`` leaves them almost unchanged; a scale lifts them).
    """

    is_preprocessor = True
    is_postprocessor = False

    def __init__(
        self,
        modalities: Sequence[str] = msp.modalities,
        method: str = "log10",
        scale: Optional[Mapping[str, float]] = None,
    ):
        super().__init__()
        if method not in ("log10", "log", "none"):
            raise ValueError(f"unknown normalisation {method!r}; use log10, log or none")
        self.modalities = list(modalities)
        self.method = method
        self.scale = {m: float((scale or {}).get(m, 1.0)) for m in self.modalities}

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        for m in self.modalities:
            key = msp.spectrum_keys[m]
            x = inputs[key] * self.scale[m]
            if self.method == "log10":
                x = torch.log10(1.0 + x)
            elif self.method == "log":
                x = torch.log1p(x)
            inputs[key] = x
        return inputs


class MaskSpectraPatches(Transform):
    """Choose the patches SpecFormer must reconstruct (masked patch reconstruction).

    For each modality, keeps ``int(N * (1 - ratio))`` of its N patches and masks the rest,
    uniformly at random per molecule (also at validation, as released; a different draw on every
    rank under DDP, see :func:`rank_generator`). Writes
    ``{modality}_patch_mask``, boolean (1, N), True = masked; SpecFormer zero-fills those
    patches of the normalised input before embedding them. Patch geometry must match the
    model's SpecFormer (the configs interpolate it from there).

    Modality dropout (``modality_dropout`` p > 0, beyond the paper): per molecule, each modality is
    withheld with probability p, never all of them (if the draw withholds all, one drawn at random
    is kept), and ``{modality}_dropped`` (1,) bool records it for every modality. ``SpectraEncoder``
    feeds a withheld modality exactly as ``identify`` feeds a missing one (zeros, every patch masked)
    and leaves it out of the reconstruction loss, so the contrastive and MPR losses see every subset
    of the spectra. p = 0 (the default) writes no flag: the released behaviour.
    """

    is_preprocessor = True
    is_postprocessor = False

    def __init__(
        self,
        ratio: float = 0.1,
        modalities: Sequence[str] = msp.modalities,
        patch_length: Optional[Mapping[str, int]] = None,
        patch_stride: Optional[Mapping[str, int]] = None,
        spectrum_length: Optional[Mapping[str, int]] = None,
        modality_dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality dropout must be in [0, 1), got {modality_dropout}")
        self.ratio = ratio
        self.modality_dropout = modality_dropout
        self.modalities = list(modalities)
        geometry = patch_geometry(self.modalities, patch_length, patch_stride, spectrum_length)
        self.n_patches = {m: g.n_patches for m, g in geometry.items()}

    def n_masked(self, modality: str) -> int:
        n = self.n_patches[modality]
        return n - int(n * (1.0 - self.ratio))

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        generator = rank_generator()
        for m in self.modalities:
            n = self.n_patches[m]
            mask = torch.zeros(1, n, dtype=torch.bool)
            mask[0, torch.randperm(n, generator=generator)[: self.n_masked(m)]] = True
            inputs[msp.patch_mask(m)] = mask
        if self.modality_dropout > 0:
            dropped = torch.rand(len(self.modalities), generator=generator) < self.modality_dropout
            if bool(dropped.all()):  # never all: keep one
                dropped[torch.randint(len(self.modalities), (1,), generator=generator)] = False
            for m, flag in zip(self.modalities, dropped):
                inputs[msp.modality_dropped(m)] = flag.reshape(1)
        return inputs


class GaussianCoordinateNoise(Transform):
    """Perturb positions with isotropic Gaussian noise of width ``sigma`` (Angstrom).

    Writes the noisy positions to ``_positions`` and the noise, the denoising target, to
    ``position_noise`` (n_atoms, 3); the clean positions are their difference. Place it
    before the neighbour list.
    """

    is_preprocessor = True
    is_postprocessor = False

    def __init__(self, sigma: float = 0.04):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"noise width sigma must be >= 0, got {sigma}")
        self.sigma = sigma

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        positions = inputs[structure.R]
        generator = rank_generator()
        if generator is None:
            noise = torch.randn_like(positions) * self.sigma
        else:
            noise = (
                torch.randn(positions.shape, generator=generator, dtype=positions.dtype).to(positions.device)
                * self.sigma
            )
        inputs[structure.R] = positions + noise
        inputs[msp.position_noise] = noise
        return inputs


class StandardizeProperty(ScaleProperty):
    """Multiply a model output by the standard deviation of its training labels, so the
    network predicts standardised values (TorchMD-Net's ``standardize``, released recipe).

    Placed after the output module (and before ``Forces``), on every forward pass; the mean is
    handled by ``RemoveOffsets``/``AddOffsets`` as usual in SchNetPack. The standard deviation
    is taken per molecule (as released), of the label minus its atom references with
    ``remove_atomrefs``; it is computed once from the training split and saved with the model
    (buffer ``scale``, in the label's unit). ``standardize=False`` keeps the scale at 1
    (SchNetPack's default: no scaling), so configs can switch it.
    """

    def __init__(self, input_key: str, remove_atomrefs: bool = False, standardize: bool = True):
        super().__init__(input_key=input_key, scale=None if standardize else torch.ones(1))
        self.remove_atomrefs = remove_atomrefs

    def datamodule(self, _datamodule):
        if not self._initialized:
            _, std = _datamodule.get_stats(self._target_key, False, self.remove_atomrefs)
            self.scale = torch.abs(std).detach().reshape(1).to(self.scale.dtype)
            self._initialized = True
