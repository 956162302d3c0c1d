"""Fine-tuning on the 12 QM9 targets: what ``experiment=qm9_finetune`` looks up per target.

The experiment lists every module it builds; what depends on the target (``globals.property``:
mu, alpha, homo, lumo, gap, r2, zpve, U0, U, H, G, Cv, or SchNetPack's key) comes from the table
``data.qm9_targets.QM9_TARGETS`` through the ``qm9`` resolver (:func:`qm9_attribute`), and the logged MAE,
named by the paper's unit (``{subset}_{key}_mae_meV``, ``..._mae_D``, ...), from :func:`qm9_metrics`.
"""

from typing import Any, Dict, Optional

from schnetpack_molspectra.data.qm9_targets import qm9_target
from schnetpack_molspectra.train.metrics import ScaledMeanAbsoluteError

__all__ = ["qm9_attribute", "qm9_metrics"]


def qm9_attribute(property: str, attribute: str, value: Optional[str] = None) -> Any:
    """``${qm9:<property>,<attribute>}``: an attribute of the QM9 target (``key``, ``aggregation``,
    ``atomrefs``, ``is_extensive``, ``module``, ...); ``${qm9:<property>,<attribute>,<value>}``:
    whether it equals ``value`` (e.g. ``module,atomwise``)."""
    found = getattr(qm9_target(property), attribute)
    return found if value is None else found == value


def qm9_metrics(property: str) -> Dict[str, ScaledMeanAbsoluteError]:
    """The target's MAE in the paper's unit, named by it: ``{"mae_meV": ...}`` for energies."""
    target = qm9_target(property)
    unit = target.report_unit.replace("/", "_").replace("^", "")
    return {f"mae_{unit}": ScaledMeanAbsoluteError(target.report_scale)}
