"""Output modules (SchNetPack ``output_modules``): the pre-training heads and the QM9 extras."""

from typing import Dict, Optional, Sequence, Tuple

import schnetpack as spk
import torch
import torch.nn.functional as F
from ase.data import atomic_masses
from schnetpack import properties as structure
from schnetpack.datasets import QM9
from schnetpack.nn.scatter import scatter_add
from torch import nn

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.distributed import all_reduce_sum
from schnetpack_molspectra.spectra.grids import SPECTRUM_LENGTHS
from schnetpack_molspectra.spectra.similarity import area_normalize

__all__ = [
    "DenoisingHead",
    "MoleculeRepresentation",
    "SpectraEncoder",
    "SpectraHead",
    "missing_modality",
    "ElectronicSpatialExtent",
    "RunningNoiseScale",
]


class RunningNoiseScale(nn.Module):
    """Running root-mean-square of the denoising target, saved with the model.

    A single isotropic scale (no mean shift, no per-axis scale) so that standardising
    keeps the target rotation-equivariant. Updated only in training mode.

    Under DDP (inside ``MolSpectraTask``'s steps, see ``distributed.collective_step``) every
    update adds the sums of all ranks' targets, so the statistics are identical on every rank and
    equal to those of one process that saw all ranks' batches.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.register_buffer("sum_squares", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, target: torch.Tensor):
        """Add a batch of targets (any shape, e.g. (n_atoms, 3)), summed over ranks under DDP."""
        target = target.detach().double()
        increment = torch.stack([target.pow(2).sum(), target.new_tensor(float(target.numel()))])
        increment = all_reduce_sum(increment)
        self.sum_squares += increment[0]
        self.count += increment[1]

    @property
    def scale(self) -> torch.Tensor:
        """Current RMS of the target (Angstrom), a scalar; 1 before any update."""
        if self.count == 0:
            return torch.ones((), device=self.count.device)
        return (self.sum_squares / self.count).sqrt().clamp_min(self.eps).float()


class DenoisingHead(nn.Module):
    """Predict the per-atom coordinate noise (n_atoms, 3), in units of the running noise scale.

    ``mode="vector"``: a gated-equivariant MLP on PaiNN/SO3net scalar and vector features
    (SO3net needs ``return_vector_representation: True``) gives one 3-vector per atom.
    ``mode="gradient"``: for scalar-only encoders (SchNet), an MLP gives a per-atom
    scalar, summed per molecule, and the prediction is its negative gradient w.r.t.
    the (noisy) positions. Both are rotation-equivariant.

    Writes ``predicted_noise`` and, when ``position_noise`` is in the inputs, the
    standardised target ``noise_target`` (the running scale is updated in training);
    models leave a missing output out of their results.
    ``scale.scale`` converts predictions back to Angstrom.
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: Optional[int] = None,
        n_layers: int = 2,
        mode: str = "vector",
        prediction_key: str = msp.predicted_noise,
        target_key: str = msp.noise_target,
    ):
        super().__init__()
        if mode not in ("vector", "gradient", "auto"):
            raise ValueError(f"denoising head mode must be 'vector', 'gradient' or 'auto', got {mode!r}")
        self.mode = mode
        self.prediction_key = prediction_key
        self.target_key = target_key
        self.n_in, self.n_hidden, self.n_layers = n_in, n_hidden, n_layers
        self.net = None
        self.required_derivatives = None
        if mode != "auto":
            self._build(mode)
        self.scale = RunningNoiseScale()
        self.model_outputs = [prediction_key, target_key]

    def _build(self, mode: str):
        self.mode = mode
        if mode == "vector":
            self.net = spk.nn.build_gated_equivariant_mlp(
                n_in=self.n_in, n_out=1, n_hidden=self.n_hidden, n_layers=self.n_layers
            )
            self.required_derivatives = None
        else:
            self.net = spk.nn.build_mlp(n_in=self.n_in, n_out=1, n_hidden=self.n_hidden, n_layers=self.n_layers)
            self.required_derivatives = [structure.R]

    def resolve_mode(self, representation: nn.Module):
        """For ``mode="auto"``: vector head on PaiNN/SO3net (switching on SO3net's Cartesian
        vector output), gradient head on any other representation."""
        if self.mode != "auto":
            return
        if isinstance(representation, spk.representation.SO3net):
            representation.return_vector_representation = True
        vector = isinstance(representation, (spk.representation.PaiNN, spk.representation.SO3net))
        self._build("vector" if vector else "gradient")

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if self.net is None:
            raise RuntimeError("DenoisingHead(mode='auto') must be resolved with resolve_mode(representation)")
        if self.mode == "vector":
            if msp.vector_representation not in inputs:
                raise KeyError(
                    f"DenoisingHead(mode='vector') needs '{msp.vector_representation}' (PaiNN, or SO3net with "
                    "return_vector_representation=True); use mode='gradient' for scalar-only encoders"
                )
            _, vector = self.net((inputs[msp.scalar_representation], inputs[msp.vector_representation]))
            prediction = vector.squeeze(-1)
        else:
            positions = inputs[structure.R]
            atom_energy = self.net(inputs[msp.scalar_representation]).squeeze(-1)
            (gradient,) = torch.autograd.grad(
                atom_energy.sum(), positions, create_graph=self.training, retain_graph=True
            )
            prediction = -gradient
        inputs[self.prediction_key] = prediction
        if msp.position_noise in inputs:  # only batches that were perturbed carry a target
            target = inputs[msp.position_noise]
            if self.training:
                self.scale.update(target)
            inputs[self.target_key] = target / self.scale.scale
        return inputs


class MoleculeRepresentation(nn.Module):
    """Pool per-atom scalar features into one vector per molecule (the 3D side of the
    contrastive loss): ``representation_3d`` (n_molecules, n_atom_basis), sum (or mean) over atoms."""

    def __init__(self, aggregation: str = "sum", output_key: str = msp.representation_3d):
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be 'sum' or 'mean', got {aggregation!r}")
        self.aggregation = aggregation
        self.output_key = output_key
        self.model_outputs = [output_key]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        features = inputs[msp.scalar_representation]
        idx_m = inputs[structure.idx_m]
        n_molecules = int(idx_m[-1]) + 1
        pooled = scatter_add(features, idx_m, dim_size=n_molecules)
        if self.aggregation == "mean":
            pooled = pooled / inputs[structure.n_atoms].unsqueeze(-1).to(pooled.dtype)
        inputs[self.output_key] = pooled
        return inputs


def missing_modality(
    spectrum: torch.Tensor, mask: Optional[torch.Tensor], missing: torch.Tensor, n_patches: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """SpecFormer's input for molecules that lack a modality: zeros, every patch masked.

    Args:
        spectrum: normalised spectra (n_molecules, L) of one modality (rows of missing molecules ignored).
        mask: their patch masks (n_molecules, n_patches), True = masked, or None (no patch masked).
        missing: (n_molecules,) bool, True where the molecule lacks the modality.
        n_patches: patches per spectrum of that modality.

    Returns:
        (spectrum with the missing rows zeroed, mask with the missing rows all True).
    """
    missing = missing.to(spectrum.device)
    if mask is None:
        mask = torch.zeros(spectrum.shape[0], n_patches, dtype=torch.bool, device=spectrum.device)
    return spectrum.masked_fill(missing[:, None], 0.0), mask | missing[:, None]


class SpectraEncoder(nn.Module):
    """SpecFormer as an output module: the spectra side of pre-training.

    Reads each modality's normalised spectrum and, where ``MaskSpectraPatches`` wrote one, its
    patch mask from the inputs, runs ``specformer`` and writes ``representation_spectra``
    (n_molecules, n_out) and, per modality, the reconstructed and the clean patches at the
    masked positions (n_masked_patches, P; every patch without a mask).

    A molecule whose modality is withheld by modality dropout (``{modality}_dropped`` True) gets
    that spectrum as :func:`missing_modality` gives a missing one (zeros, every patch masked), and
    its patches are not reconstruction targets.
    """

    def __init__(self, specformer: nn.Module):
        super().__init__()
        self.specformer = specformer
        self.model_outputs = [msp.representation_spectra]
        for m in specformer.modalities:
            self.model_outputs += [msp.reconstructed_patches(m), msp.target_patches(m)]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        spectra, masks = {}, {}
        for m in self.specformer.modalities:
            key = msp.spectrum_keys[m]
            if key not in inputs:
                raise KeyError(f"batch has no '{key}'; the {m} modality is enabled in SpecFormer")
            spectra[m] = inputs[key]
            if msp.patch_mask(m) in inputs:
                masks[m] = inputs[msp.patch_mask(m)]
        targets = dict(masks)  # the patches to reconstruct
        for m in self.specformer.modalities:
            if msp.modality_dropped(m) in inputs:
                dropped = inputs[msp.modality_dropped(m)].reshape(-1).bool()
                spectra[m], masks[m] = missing_modality(spectra[m], masks.get(m), dropped, self.specformer.n_patches[m])
                if m in targets:
                    targets[m] = targets[m] & ~dropped[:, None]
        representation, reconstructions, patches = self.specformer(spectra, masks)
        inputs[msp.representation_spectra] = representation
        for m in self.specformer.modalities:
            recon, clean = reconstructions[m], patches[m]
            if m in targets:
                recon, clean = recon[targets[m]], clean[targets[m]]
            inputs[msp.reconstructed_patches(m)] = recon.reshape(-1, recon.shape[-1])
            inputs[msp.target_patches(m)] = clean.reshape(-1, clean.shape[-1])
        return inputs


class SpectraHead(nn.Module):
    """Spectra from the 3D structure: per modality the broadened spectrum on its QM9S grid,
    area-normalised (each row sums to 1 over the grid points), as one more SchNetPack output.

    Per atom an MLP of the scalar features (``n_layers`` layers, ``n_hidden`` wide), pooled over
    the molecule's atoms (``aggregation_mode`` "mean" or "sum"); per modality a linear layer gives
    the intensities at every ``downsample``-th grid point, softplus keeps them positive, linear
    interpolation fills the grid in between (the lines are >= 8 cm^-1 / 0.2 eV wide: 4 cm^-1
    steps lose nothing) and the rows are area-normalised.

    Writes ``msp.spectrum_keys[m]`` (n_molecules, n_points of m's grid) for each modality m, the
    key the targets have in the database (as SchNetPack's ``Atomwise`` writes ``energy``).

    Args:
        n_in: features per atom of the representation (``n_atom_basis``).
        modalities: the spectra to predict (subset of uv, ir, raman).
        n_hidden: width of the per-atom MLP and of the pooled vector.
        n_layers: layers of the per-atom MLP.
        downsample: grid points per predicted point; must divide each grid's n_points - 1.
        aggregation_mode: "mean" (default) or "sum" over the atoms.
    """

    def __init__(
        self,
        n_in: int,
        modalities: Sequence[str] = ("ir", "raman"),
        n_hidden: int = 256,
        n_layers: int = 2,
        downsample: int = 4,
        aggregation_mode: str = "mean",
    ):
        super().__init__()
        unknown = [m for m in modalities if m not in msp.spectrum_keys]
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {list(msp.modalities)}, got {list(modalities)}")
        if aggregation_mode not in ("sum", "mean"):
            raise ValueError(f"aggregation_mode must be 'sum' or 'mean', got {aggregation_mode!r}")
        for m in modalities:
            if (SPECTRUM_LENGTHS[m] - 1) % downsample:
                raise ValueError(
                    f"downsample {downsample} does not divide the {m} grid's {SPECTRUM_LENGTHS[m] - 1} steps"
                )
        self.modalities = list(modalities)
        self.downsample = int(downsample)
        self.aggregation_mode = aggregation_mode
        self.atomwise = spk.nn.build_mlp(n_in=n_in, n_out=n_hidden, n_hidden=n_hidden, n_layers=n_layers)
        self.activation = spk.nn.shifted_softplus
        self.outputs = nn.ModuleDict(
            {m: nn.Linear(n_hidden, (SPECTRUM_LENGTHS[m] - 1) // self.downsample + 1) for m in self.modalities}
        )
        self.model_outputs = [msp.spectrum_keys[m] for m in self.modalities]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        idx_m = inputs[structure.idx_m]
        n_molecules = int(idx_m[-1]) + 1
        pooled = scatter_add(self.activation(self.atomwise(inputs[msp.scalar_representation])), idx_m, n_molecules)
        if self.aggregation_mode == "mean":
            pooled = pooled / inputs[structure.n_atoms].unsqueeze(-1).to(pooled.dtype)
        for m in self.modalities:
            coarse = F.softplus(self.outputs[m](pooled))
            if self.downsample > 1:
                coarse = F.interpolate(coarse[:, None], size=SPECTRUM_LENGTHS[m], mode="linear", align_corners=True)[
                    :, 0
                ]
            inputs[msp.spectrum_keys[m]] = area_normalize(coarse)
        return inputs


class ElectronicSpatialExtent(nn.Module):
    """R^2 = sum_i q_i |r_i - r_com|^2 with atomwise scalars q_i (n_molecules,), a0^2 if positions are."""

    def __init__(self, n_in: int, output_key: str = QM9.r2, n_layers: int = 2):
        super().__init__()
        self.output_key = output_key
        self.net = spk.nn.build_mlp(n_in=n_in, n_out=1, n_layers=n_layers)
        self.register_buffer("masses", torch.tensor(atomic_masses, dtype=torch.float32), persistent=False)
        self.model_outputs = [output_key]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        idx_m = inputs[structure.idx_m]
        n_molecules = int(idx_m[-1]) + 1
        positions = inputs[structure.R]
        masses = self.masses.to(positions.dtype)[inputs[structure.Z]]
        com = (
            scatter_add(masses[:, None] * positions, idx_m, n_molecules)
            / scatter_add(masses, idx_m, n_molecules)[:, None]
        )
        r2 = ((positions - com[idx_m]) ** 2).sum(-1)
        q = self.net(inputs[msp.scalar_representation]).squeeze(-1)
        inputs[self.output_key] = scatter_add(q * r2, idx_m, n_molecules)
        return inputs
