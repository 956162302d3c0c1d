"""What :func:`~schnetpack_molspectra.identify.identify` returns: one :class:`Identification` per
query, with its ranked :class:`Hit` list; :mod:`~schnetpack_molspectra.identify.output` writes them."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["Hit", "Identification"]


@dataclass
class Hit:
    """One candidate of the library at ``rank`` (1 = best), by cosine ``score``."""

    rank: int
    index: int
    name: str
    smiles: str
    score: float


@dataclass
class Identification:
    """The ranked candidates of one query and what the model used of it."""

    query: str
    source: str
    used: List[str]  # modalities given and used
    filled: List[str]  # modalities the model uses that the query lacks (fully masked)
    ignored: List[str]  # modalities given that the model does not use
    hits: List[Hit]
    query_smiles: Optional[str] = None
    coverage: Dict[str, float] = field(default_factory=dict)
