"""Fine-tuning on the 12 QM9 targets: output module, loss/metrics, offsets, units per target.

Each function is a hydra ``_target_`` taking the short target name of the paper
(``globals.property``: mu, alpha, homo, lumo, gap, r2, zpve, U0, U, H, G, Cv), so one
experiment config (``qm9_finetune``) covers all twelve. MAE is logged in the paper's units
(meV for energies) as ``{subset}_{property}_mae_<unit>``.
"""
from typing import List

from torch import nn
import schnetpack as spk

from schnetpack_molspectra.atomistic import DenoisingHead, ElectronicSpatialExtent
from schnetpack_molspectra.compat import moved_names
from schnetpack_molspectra.data.qm9 import qm9_target
from schnetpack_molspectra.task import DenoisingOutput
from schnetpack_molspectra.train.metrics import ScaledMeanAbsoluteError
from schnetpack_molspectra.transform import GaussianCoordinateNoise, StandardizeProperty

__all__ = [
    "qm9_output_module",
    "qm9_model_output",
    "qm9_transforms",
    "qm9_output_modules",
    "qm9_task_outputs",
    "qm9_add_offsets",
]


def qm9_output_module(property: str, n_in: int) -> nn.Module:
    """The SchNetPack output module for one QM9 target."""
    target = qm9_target(property)
    if target.module == "dipole":
        return spk.atomistic.DipoleMoment(n_in=n_in, dipole_key=target.key, predict_magnitude=True, use_vector_representation=False)
    if target.module == "spatial_extent":
        return ElectronicSpatialExtent(n_in=n_in, output_key=target.key)
    return spk.atomistic.Atomwise(n_in=n_in, output_key=target.key, aggregation_mode=target.aggregation)


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
    target = qm9_target(property)
    modules = [qm9_output_module(property, n_in)]
    if standardize:
        modules.append(StandardizeProperty(target.key, remove_atomrefs=target.atomrefs))
    if aux_denoising:
        modules.append(DenoisingHead(n_in=n_in, mode="auto"))
    return modules


def qm9_task_outputs(property: str, aux_denoising: bool = False, aux_weight: float = 0.1) -> List[nn.Module]:
    """The target's loss, plus the auxiliary denoising loss (training batches only)."""
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


__getattr__ = moved_names(
    __name__,
    {
        "ElectronicSpatialExtent": "schnetpack_molspectra.atomistic.ElectronicSpatialExtent",
        "StandardizeProperty": "schnetpack_molspectra.transform.StandardizeProperty",
        "ScaledMeanAbsoluteError": "schnetpack_molspectra.train.metrics.ScaledMeanAbsoluteError",
    },
)
