"""What another level of theory and a real instrument do to a spectrum, drawn at random: batched torch
functions on stick spectra of many molecules at once (no loop over molecules or lines).

A batch of stick spectra is three flat tensors: line ``positions`` (K,; cm^-1 or eV), ``intensities``
(K,) and ``molecule`` (K,; the row of each line's molecule, 0 ... n_molecules - 1). Per molecule
:func:`move_lines` draws a global scale of the positions, a smooth position-dependent scale
(anharmonicity: lines far from ``reference`` move more) and per-line shifts, :func:`jitter_intensities`
per-line intensity factors;
:func:`broaden_lines` puts pseudo-Voigt lines of a per-molecule width and Lorentzian fraction on a
grid; :func:`instrument` adds a smooth baseline and noise. Every draw comes from ``generator``
(torch's global one if None), on the tensors' device.
"""

import math
from typing import Optional, Sequence

import torch

from schnetpack_molspectra.spectra.similarity import area_normalize

__all__ = [
    "uniform",
    "move_lines",
    "jitter_intensities",
    "broaden_lines",
    "instrument",
    "normalize_spectrum",
    "NORMALIZATIONS",
]


def uniform(bounds: Sequence[float], n: int, like: torch.Tensor, generator: Optional[torch.Generator] = None):
    """``n`` draws from U(lo, hi), dtype and device of ``like``."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)


def move_lines(
    positions: torch.Tensor,
    molecule: torch.Tensor,
    n_molecules: int,
    scale: Sequence[float] = (1.0, 1.0),
    anharmonic: float = 0.0,
    reference: float = 2000.0,
    shift: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Line positions (K,) as another level of theory would place them: per molecule times
    s ~ U(``scale``) times (1 + a (x - reference) / reference) with a ~ U(-anharmonic, anharmonic),
    per line plus a shift ~ N(0, ``shift``) (position units)."""
    s = uniform(scale, n_molecules, positions, generator)[molecule]
    a = uniform((-anharmonic, anharmonic), n_molecules, positions, generator)[molecule]
    moved = positions * s * (1.0 + a * (positions - reference) / reference)
    if shift > 0:
        moved = moved + shift * torch.randn(positions.shape, generator=generator, device=positions.device)
    return moved


def jitter_intensities(
    intensities: torch.Tensor, noise: float = 0.0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Line intensities (K,) each times exp(N(0, ``noise``))."""
    if noise <= 0:
        return intensities
    return intensities * torch.exp(
        noise * torch.randn(intensities.shape, generator=generator, device=intensities.device)
    )


def broaden_lines(
    positions: torch.Tensor,
    intensities: torch.Tensor,
    molecule: torch.Tensor,
    n_molecules: int,
    grid: torch.Tensor,
    width: torch.Tensor,
    lorentzian_fraction: torch.Tensor,
    chunk: int = 4096,
) -> torch.Tensor:
    """Spectra (n_molecules, n_points) on ``grid`` (n_points,): each line an area-normalised
    pseudo-Voigt of its molecule's FWHM ``width`` (n_molecules,) and Lorentzian fraction
    (n_molecules,; 1 = Lorentzian as :func:`.broadening.lorentzian`, 0 = Gaussian), times its
    intensity. Lines are summed ``chunk`` at a time to bound the memory (chunk x n_points)."""
    out = torch.zeros(n_molecules, grid.numel(), dtype=grid.dtype, device=grid.device)
    for start in range(0, positions.numel(), chunk):
        part = slice(start, start + chunk)
        mol = molecule[part]
        w, eta = width[mol][:, None], lorentzian_fraction[mol][:, None]
        d2 = (grid[None, :] - positions[part][:, None]) ** 2
        lorentz = (w / (2 * math.pi)) / (d2 + w**2 / 4)
        sigma = w / (2 * math.sqrt(2 * math.log(2)))
        gauss = torch.exp(-d2 / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
        out.index_add_(0, mol, intensities[part][:, None] * (eta * lorentz + (1 - eta) * gauss))
    return out


def instrument(
    spectra: torch.Tensor,
    baseline: float = 0.0,
    noise: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Spectra (n_molecules, n_points) as an instrument records them: plus a smooth, positive baseline
    (a random quadratic over the grid whose height is up to ``baseline`` times the spectrum's peak)
    and Gaussian noise of up to ``noise`` times the peak (levels drawn per molecule), clipped at 0."""
    n, length = spectra.shape
    peak = spectra.amax(-1, keepdim=True)
    out = spectra
    if baseline > 0:
        t = torch.linspace(0, 1, length, device=spectra.device, dtype=spectra.dtype)
        c = torch.rand(n, 3, generator=generator, device=spectra.device, dtype=spectra.dtype)
        shape = c[:, :1] + c[:, 1:2] * t + c[:, 2:] * t**2  # 0 ... 3
        height = uniform((0, baseline), n, spectra, generator)[:, None] / 3
        out = out + height * peak * shape
    if noise > 0:
        level = uniform((0, noise), n, spectra, generator)[:, None]
        out = out + level * peak * torch.randn(spectra.shape, generator=generator, device=spectra.device)
    return out.clamp_min(0.0)


#: the spectra normalisations (:func:`normalize_spectrum`)
NORMALIZATIONS = ("log10", "log", "none", "area")


def normalize_spectrum(x: torch.Tensor, method: str = "log10", scale: float = 1.0) -> torch.Tensor:
    """``log10(1 + scale * x)`` (``method="log10"``), ``log(1 + scale * x)`` (``"log"``),
    ``scale * x`` (``"none"``): the normalisation SpecFormer's inputs get; or ``"area"``: each row
    divided by its sum (unit area over the grid points, all-zero rows stay zero), the targets of
    spectrum prediction."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; use one of {', '.join(NORMALIZATIONS)}")
    if method == "area":
        return area_normalize(x)
    x = x * scale
    if method == "log10":
        return torch.log10(1.0 + x)
    if method == "log":
        return torch.log1p(x)
    return x
