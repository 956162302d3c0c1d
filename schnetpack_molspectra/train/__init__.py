"""Training parts that are not model parts, laid out as ``schnetpack.train``: loss functions,
metrics, LR schedules and callbacks."""

from .callbacks import FinalValidation
from .losses import InfoNCELoss, SmoothedLoss, info_nce
from .lr_scheduler import WarmupCosineLR, resolve_steps
from .metrics import InfoNCE, RetrievalAccuracy, ScaledMeanAbsoluteError, retrieval_hits
from .summary import PretrainingSummary, summarise_validation
from .trainer import Trainer

__all__ = [
    "info_nce",
    "InfoNCELoss",
    "SmoothedLoss",
    "resolve_steps",
    "WarmupCosineLR",
    "retrieval_hits",
    "InfoNCE",
    "RetrievalAccuracy",
    "ScaledMeanAbsoluteError",
    "FinalValidation",
    "PretrainingSummary",
    "summarise_validation",
    "Trainer",
]
