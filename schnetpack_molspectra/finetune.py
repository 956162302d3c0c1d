"""Fine-tuning on the 12 QM9 targets: output module, loss/metrics, offsets, units per target.

Each function is a hydra ``_target_`` taking the short target name of the paper
(``globals.property``: mu, alpha, homo, lumo, gap, r2, zpve, U0, U, H, G, Cv), so one
experiment config (``qm9_finetune``) covers all twelve. MAE is logged in the paper's units
(meV for energies) as ``{subset}_{property}_mae_<unit>``.
"""
from typing import Dict, List

import torch
from torch import nn
import schnetpack as spk
from schnetpack import properties as structure
from schnetpack.datasets import QM9
from schnetpack.nn.scatter import scatter_add
from torchmetrics.regression import MeanAbsoluteError

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.qm9 import QM9_TARGETS, QM9Target, qm9_target  # re-exported

__all__ = [
    "QM9Target",
    "QM9_TARGETS",
    "qm9_target",
    "qm9_output_module",
    "qm9_model_output",
    "qm9_transforms",
    "qm9_output_modules",
    "qm9_task_outputs",
    "qm9_add_offsets",
    "StandardizeProperty",
    "ElectronicSpatialExtent",
    "ScaledMeanAbsoluteError",
]


class ElectronicSpatialExtent(nn.Module):
    """R^2 = sum_i q_i |r_i - r_com|^2 with atomwise scalars q_i (n_molecules,), a0^2 if positions are."""

    def __init__(self, n_in: int, output_key: str = QM9.r2, n_layers: int = 2):
        super().__init__()
        from ase.data import atomic_masses

        self.output_key = output_key
        self.net = spk.nn.build_mlp(n_in=n_in, n_out=1, n_layers=n_layers)
        self.register_buffer("masses", torch.tensor(atomic_masses, dtype=torch.float32), persistent=False)
        self.model_outputs = [output_key]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        idx_m = inputs[structure.idx_m]
        n_molecules = int(idx_m[-1]) + 1
        positions = inputs[structure.R]
        masses = self.masses.to(positions.dtype)[inputs[structure.Z]]
        com = scatter_add(masses[:, None] * positions, idx_m, n_molecules) / scatter_add(masses, idx_m, n_molecules)[:, None]
        r2 = ((positions - com[idx_m]) ** 2).sum(-1)
        q = self.net(inputs[msp.scalar_representation]).squeeze(-1)
        inputs[self.output_key] = scatter_add(q * r2, idx_m, n_molecules)
        return inputs


def qm9_output_module(property: str, n_in: int) -> nn.Module:
    """The SchNetPack output module for one QM9 target."""
    target = qm9_target(property)
    if target.module == "dipole":
        return spk.atomistic.DipoleMoment(n_in=n_in, dipole_key=target.key, predict_magnitude=True, use_vector_representation=False)
    if target.module == "spatial_extent":
        return ElectronicSpatialExtent(n_in=n_in, output_key=target.key)
    return spk.atomistic.Atomwise(n_in=n_in, output_key=target.key, aggregation_mode=target.aggregation)


class StandardizeProperty(spk.transform.ScaleProperty):
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


class ScaledMeanAbsoluteError(MeanAbsoluteError):
    """MAE multiplied by ``scale`` (e.g. 1000: eV -> meV)."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def compute(self):
        return super().compute() * self.scale


def qm9_model_output(property: str, loss_weight: float = 1.0) -> spk.task.ModelOutput:
    """MSE loss; MAE logged in the paper's unit as ``mae_<unit>``."""
    target = qm9_target(property)
    unit = target.report_unit.replace("/", "_").replace("^", "")
    return spk.task.ModelOutput(
        name=target.key,
        loss_fn=nn.MSELoss(),
        loss_weight=loss_weight,
        metrics={f"mae_{unit}": ScaledMeanAbsoluteError(target.report_scale)},
    )


def qm9_transforms(property: str, cutoff: float, aux_denoising: bool = False, aux_sigma: float = 0.005) -> List[nn.Module]:
    """Preprocessing: centre, remove the mean (per atom for extensive targets, per molecule for
    intensive ones such as homo/lumo/gap) and atom references where the target has them, coordinate noise of ``aux_sigma`` (A) for auxiliary denoising, neighbour list, float32."""
    from schnetpack_molspectra.transform import GaussianCoordinateNoise

    target = qm9_target(property)
    offsets = []
    if target.module == "atomwise":
        offsets = [
            spk.transform.RemoveOffsets(
                target.key, remove_mean=True, remove_atomrefs=target.atomrefs, is_extensive=target.is_extensive
            )
        ]
    noise = [GaussianCoordinateNoise(aux_sigma)] if aux_denoising else []
    return [
        spk.transform.SubtractCenterOfMass(),
        *offsets,
        *noise,
        spk.transform.MatScipyNeighborList(cutoff=cutoff),
        spk.transform.CastTo32(),
    ]


def qm9_output_modules(
    property: str, n_in: int, aux_denoising: bool = False, standardize: bool = False
) -> List[nn.Module]:
    """The target's output module, scaled by the labels' standard deviation with
    ``standardize``, plus a denoising head for auxiliary denoising."""
    from schnetpack_molspectra.atomistic import DenoisingHead

    target = qm9_target(property)
    modules = [qm9_output_module(property, n_in)]
    if standardize:
        modules.append(StandardizeProperty(target.key, remove_atomrefs=target.atomrefs))
    if aux_denoising:
        modules.append(DenoisingHead(n_in=n_in, mode="auto"))
    return modules


def qm9_task_outputs(property: str, aux_denoising: bool = False, aux_weight: float = 0.1) -> List[nn.Module]:
    """The target's loss, plus the auxiliary denoising loss (training batches only)."""
    from schnetpack_molspectra.task import DenoisingOutput

    outputs = [qm9_model_output(property)]
    if aux_denoising:
        outputs.append(
            DenoisingOutput("aux_denoising", nn.MSELoss(), aux_weight, optional=True)
        )
    return outputs


def qm9_add_offsets(property: str) -> List[nn.Module]:
    """Postprocessing matching the offsets removed by :func:`qm9_transforms`."""
    target = qm9_target(property)
    modules = [spk.transform.CastTo64()]
    if target.module == "atomwise":
        modules.append(
            spk.transform.AddOffsets(
                target.key, add_mean=True, add_atomrefs=target.atomrefs, is_extensive=target.is_extensive
            )
        )
    return modules
