"""Training helpers that are not model parts: callbacks."""
from .summary import PretrainingSummary, summarise_validation

__all__ = ["PretrainingSummary", "summarise_validation"]
