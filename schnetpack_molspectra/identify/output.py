"""The results for people and files: a plain-text table per query (:func:`format_results`) and a
CSV of one row per query and rank (:func:`write_csv`), each marking the candidates whose canonical
SMILES (RDKit) is the query's known one.
"""

import csv
import os
from typing import Optional, Sequence

from rdkit import Chem

from schnetpack_molspectra.identify.results import Identification

__all__ = ["format_results", "write_csv"]


def _canonical(smiles: Optional[str]) -> Optional[str]:
    if not smiles:
        return None
    try:
        mol = Chem.MolFromSmiles(smiles)
        return Chem.MolToSmiles(mol) if mol is not None else None
    except Exception:
        return None


def format_results(results: Sequence[Identification], library_size: Optional[int] = None) -> str:
    """A plain-text table per query."""
    lines = []
    for r in results:
        notes = [f"spectra: {'+'.join(r.used)}"]
        if r.filled:
            notes.append(f"missing {'+'.join(r.filled)} (masked)")
        if r.ignored:
            notes.append(f"ignored {'+'.join(r.ignored)} (not in the model)")
        low = [f"{m} {c:.0%}" for m, c in r.coverage.items() if c < 0.5]
        if low:
            notes.append("grid coverage " + ", ".join(low))
        lines.append(f"{r.query}  ({'; '.join(notes)})  [{r.source}]")
        truth = _canonical(r.query_smiles)
        if r.query_smiles:
            lines.append(f"  known SMILES: {r.query_smiles}")
        lines.append(f"  {'rank':>4}  {'cosine':>7}  {'SMILES':<28} name")
        for h in r.hits:
            mark = "  <- match" if truth and _canonical(h.smiles) == truth else ""
            lines.append(f"  {h.rank:>4}  {h.score:7.4f}  {h.smiles:<28} {h.name}{mark}")
    return "\n".join(lines)


def write_csv(results: Sequence[Identification], path: str) -> str:
    """One row per (query, rank): query, source, modalities, rank, cosine, candidate, SMILES,
    library index, and the query's known SMILES and whether the candidate matches it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "query",
                "source",
                "modalities",
                "missing_modalities",
                "rank",
                "cosine",
                "candidate",
                "smiles",
                "library_index",
                "query_smiles",
                "match",
            ]
        )
        for r in results:
            truth = _canonical(r.query_smiles)
            for h in r.hits:
                match = "" if truth is None else int(_canonical(h.smiles) == truth)
                w.writerow(
                    [
                        r.query,
                        r.source,
                        "+".join(r.used),
                        "+".join(r.filled),
                        h.rank,
                        f"{h.score:.6f}",
                        h.name,
                        h.smiles,
                        h.index,
                        r.query_smiles or "",
                        match,
                    ]
                )
    return path
