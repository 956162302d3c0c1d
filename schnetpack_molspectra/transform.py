"""SchNetPack preprocessing transforms for MolSpectra (applied to one molecule at a time).

Order in a data config: ``ValidateSpectra`` -> ``NormalizeSpectra`` -> ``MaskSpectraPatches``
-> ``GaussianCoordinateNoise`` -> neighbour list -> ``CastTo32``.

Random draws (patch masks, coordinate noise) come from torch's global generator in a single
process, as before; under distributed training from :func:`rank_generator`, so that every rank
masks and perturbs differently while a run stays reproducible with ``seed=...``.
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from schnetpack import properties as structure
from schnetpack.transform import ScaleProperty, Transform
from torch import nn

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.spectra.checks import SpectrumError, spectrum_problem
from schnetpack_molspectra.spectra.grids import GRIDS, SPECTRUM_LENGTHS
from schnetpack_molspectra.spectra.patches import patch_geometry
from schnetpack_molspectra.spectra.perturb import (
    broaden_lines,
    instrument,
    jitter_intensities,
    move_lines,
    normalize_spectrum,
    uniform,
)

__all__ = [
    "ValidateSpectra",
    "NormalizeSpectra",
    "MaskSpectraPatches",
    "GaussianCoordinateNoise",
    "CountSticks",
    "SpectraAugmentation",
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


def _index(inputs: Dict[str, torch.Tensor]):
    """The molecule's index in its dataset, or "?"."""
    return int(inputs[structure.idx]) if structure.idx in inputs else "?"


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
        index = _index(inputs)
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
        normalize_spectrum(torch.zeros(1), method)  # an unknown method fails here, not at the first molecule
        self.modalities = list(modalities)
        self.method = method
        self.scale = {m: float((scale or {}).get(m, 1.0)) for m in self.modalities}

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        for m in self.modalities:
            key = msp.spectrum_keys[m]
            inputs[key] = normalize_spectrum(inputs[key], self.method, self.scale[m])
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

    A molecule the database stores without a modality (``{modality}_missing`` True, e.g. IR and
    Raman computed, UV not) has that modality withheld in every draw, and the flags are written
    for every molecule of such a database, whatever p.
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
        flagged = [msp.modality_missing(m) in inputs for m in self.modalities]
        if self.modality_dropout > 0 or any(flagged):
            missing = torch.tensor(
                [bool(inputs[msp.modality_missing(m)]) if f else False for m, f in zip(self.modalities, flagged)]
            )
            if bool(missing.all()):
                raise ValueError(f"molecule {_index(inputs)} has none of the spectra {self.modalities}")
            dropped = torch.rand(len(self.modalities), generator=generator) < self.modality_dropout
            dropped |= missing
            if bool(dropped.all()):  # never all: keep one of those the molecule has
                present = torch.nonzero(~missing).reshape(-1)
                dropped[present[torch.randint(len(present), (1,), generator=generator)]] = False
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


#: stick keys of each modality: (positions, intensities, per-molecule line count written by CountSticks)
STICKS = {
    "uv": (msp.uv_energies, msp.uv_strengths, msp.n_uv_sticks),
    "ir": (msp.vib_frequencies, msp.ir_intensities, msp.n_vib_sticks),
    "raman": (msp.vib_frequencies, msp.raman_activities, msp.n_vib_sticks),
}


class CountSticks(Transform):
    """Write each molecule's number of vibrational modes and UV states, (1,) int64 each
    (``n_vib_sticks``, ``n_uv_sticks``), where its stick spectra are loaded, so that the sticks of a
    batch (concatenated by SchNetPack's collate) can be told apart (:class:`SpectraAugmentation`)."""

    is_preprocessor = True
    is_postprocessor = False

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        for positions, _, count in STICKS.values():
            if positions in inputs:
                inputs[count] = torch.tensor([inputs[positions].numel()], dtype=torch.long)
        return inputs


class SpectraAugmentation(nn.Module):
    """Spectra as another level of theory and a real instrument would give them, for a whole batch at
    once on the model's device (beyond the paper): each chosen molecule's spectra are broadened anew
    from its sticks (``spectra.perturb``) and normalised as ``NormalizeSpectra`` does, replacing the
    batch's spectra.

    Per molecule, with probability ``p``: vibrational lines scaled by U(``vib_scale``) and a smooth
    anharmonic scale of up to +-``anharmonic`` (relative, at 4000 cm^-1 from 2000 cm^-1), shifted per
    line by N(0, ``vib_shift`` cm^-1), the same for IR and Raman; UV lines scaled by U(``uv_scale``)
    and shifted by N(0, ``uv_shift`` eV); per modality a FWHM of U(``vib_width``) cm^-1 or
    U(``uv_width``) eV and a Lorentzian fraction of U(``lorentzian_fraction``) (0 = Gaussian lines),
    line intensities times exp(N(0, ``intensity_noise``)), a baseline of up to ``baseline`` and noise
    of up to ``noise`` times the peak. ``p = 0`` changes nothing (the released training).

    The batch needs the stick spectra and their counts (``CountSticks``); a database without sticks
    (e.g. converted QM9S) cannot be augmented. Returns a new dict; the input batch is not changed.

    Args:
        normalization, scale: as ``NormalizeSpectra``'s method and per-modality scale.
    """

    def __init__(
        self,
        p: float = 0.0,
        modalities: Sequence[str] = msp.modalities,
        normalization: str = "log10",
        scale: Optional[Mapping[str, float]] = None,
        vib_scale: Tuple[float, float] = (0.95, 1.05),
        anharmonic: float = 0.02,
        vib_shift: float = 5.0,
        vib_width: Tuple[float, float] = (8.0, 30.0),
        uv_scale: Tuple[float, float] = (0.95, 1.05),
        uv_shift: float = 0.05,
        uv_width: Tuple[float, float] = (0.1, 0.4),
        lorentzian_fraction: Tuple[float, float] = (0.0, 1.0),
        intensity_noise: float = 0.2,
        baseline: float = 0.05,
        noise: float = 0.01,
    ):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augmentation probability p must be in [0, 1], got {p}")
        normalize_spectrum(torch.zeros(1), normalization)
        self.p = p
        self.modalities = list(modalities)
        self.normalization = normalization
        self.scale = {m: float((scale or {}).get(m, 1.0)) for m in self.modalities}
        self.vib = {"scale": tuple(vib_scale), "anharmonic": anharmonic, "shift": vib_shift, "reference": 2000.0}
        self.uv = {"scale": tuple(uv_scale), "anharmonic": 0.0, "shift": uv_shift, "reference": 1.0}
        self.width = {"uv": tuple(uv_width), "ir": tuple(vib_width), "raman": tuple(vib_width)}
        self.lorentzian_fraction = tuple(lorentzian_fraction)
        self.intensity_noise = intensity_noise
        self.baseline = baseline
        self.noise = noise
        for m in self.modalities:
            self.register_buffer(f"grid_{m}", torch.tensor(GRIDS[m].values(), dtype=torch.float32), persistent=False)

    def has_sticks(self, batch: Dict[str, torch.Tensor]) -> bool:
        """Whether ``batch`` carries what augmentation needs: every modality's sticks and counts."""
        return all(key in batch for m in self.modalities for key in STICKS[m])

    def forward(
        self, batch: Dict[str, torch.Tensor], generator: Optional[torch.Generator] = None, p: Optional[float] = None
    ) -> Dict[str, torch.Tensor]:
        p = self.p if p is None else p
        if p == 0:
            return batch
        if not self.has_sticks(batch):
            needed = sorted({key for m in self.modalities for key in STICKS[m]} - set(batch))
            raise KeyError(
                f"spectra augmentation re-broadens the stick spectra, but the batch lacks {needed}: the "
                "database has no sticks (e.g. converted QM9S), or the data transforms lack CountSticks"
            )
        out = dict(batch)
        first = batch[msp.spectrum_keys[self.modalities[0]]]
        n = first.shape[0]
        chosen = torch.rand(n, generator=generator, device=first.device) < p
        lines = {}  # positions moved once per kind of sticks: IR and Raman share their frequencies
        for m in self.modalities:
            pos_key, int_key, count_key = STICKS[m]
            counts = batch[count_key].reshape(-1)
            molecule = torch.repeat_interleave(torch.arange(n, device=counts.device), counts)
            if pos_key not in lines:
                kind = self.uv if m == "uv" else self.vib
                positions = batch[pos_key].to(first.dtype)
                lines[pos_key] = move_lines(positions, molecule, n, generator=generator, **kind)
            intensities = jitter_intensities(batch[int_key].to(first.dtype), self.intensity_noise, generator)
            grid = getattr(self, f"grid_{m}").to(first.dtype)
            width = uniform(self.width[m], n, first, generator)
            eta = uniform(self.lorentzian_fraction, n, first, generator)
            raw = broaden_lines(lines[pos_key], intensities, molecule, n, grid, width, eta)
            raw = instrument(raw, self.baseline, self.noise, generator)
            augmented = normalize_spectrum(raw, self.normalization, self.scale[m])
            key = msp.spectrum_keys[m]
            out[key] = torch.where(chosen[:, None], augmented, batch[key])
        return out


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
