"""Library search and embeddings at scale: exact cosine search at any size with the base install,
and the batched 3D input path against SchNetPack's per-molecule one."""

import numpy as np
import pytest
import schnetpack.transform as trn
import torch
from ase.build import molecule
from schnetpack.interfaces import AtomsConverter

from schnetpack_molspectra.identify.encode import CPU_PAIR_BUDGET, GPU_BATCH_SIZE, batch_slices, structures_batch
from schnetpack_molspectra.identify.index import VectorIndex


def unit(rows):
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_exact_search_at_any_size_matches_brute_force(monkeypatch):
    import schnetpack_molspectra.identify.index as index_module

    rng = np.random.default_rng(0)
    library, queries = unit(rng.normal(size=(20_000, 32))), unit(rng.normal(size=(37, 32)))
    monkeypatch.setattr(index_module, "EXACT_BLOCK", 20_000 * 5)  # 5 queries a block: blocks are joined
    index = VectorIndex(library)  # 20,000 entries: exact, no FAISS needed
    assert index.kind == "exact"
    scores, top = index.search(queries, 4)
    full = queries @ library.T
    np.testing.assert_array_equal(top[:, 0], full.argmax(1))
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :4], rtol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_faiss_only_where_asked_for():
    library = unit(np.random.default_rng(1).normal(size=(50, 8)))
    assert VectorIndex(library, exact_below=100).kind == "exact"
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install faiss-cpu"):
            VectorIndex(library, exact_below=10)
    else:
        assert VectorIndex(library, exact_below=10).kind == "faiss-hnsw"


def test_batched_structures_match_schnetpacks_per_molecule_inputs():
    molecules = [molecule(name) for name in ("CH3CH2OH", "C6H6", "H2O", "CH3CONH2", "C2H6")]
    molecules[1].positions += 7.0  # far from the origin: the centre of mass is subtracted per molecule
    cutoff = 2.5  # below benzene's largest distances: some pairs are cut
    batch = structures_batch(molecules, cutoff)
    converter = AtomsConverter(
        neighbor_list=None,
        transforms=[trn.SubtractCenterOfMass(), trn.MatScipyNeighborList(cutoff=cutoff)],
        dtype=torch.float32,
    )
    reference = converter(molecules)
    for key in ("_atomic_numbers", "_n_atoms", "_idx_m"):
        assert torch.equal(batch[key], reference[key]), key
    torch.testing.assert_close(batch["_positions"], reference["_positions"], atol=1e-5, rtol=0)

    def pairs(inputs):
        return sorted(zip(inputs["_idx_i"].tolist(), inputs["_idx_j"].tolist()))

    assert pairs(batch) == pairs(reference) and len(pairs(batch)) < sum(len(m) ** 2 - len(m) for m in molecules)
    assert not batch["_offsets"].any()


def test_batches_chosen_by_device_keep_order_and_the_cpu_pair_budget():
    sizes = [18, 9, 3, 60, 12, 18, 18, 5] * 40  # one molecule (60 atoms) alone over the budget
    slices = batch_slices(sizes)
    covered = [i for part in slices for i in range(len(sizes))[part]]
    assert covered == list(range(len(sizes)))  # every molecule once, in input order
    for part in slices:
        pairs = sum(k * k for k in sizes[part])
        assert pairs <= CPU_PAIR_BUDGET or part.stop - part.start == 1
        if part.stop < len(sizes):  # full: the next molecule would not have fitted
            assert pairs + sizes[part.stop] ** 2 > CPU_PAIR_BUDGET
    assert [p.stop - p.start for p in batch_slices(sizes, 7)][:2] == [7, 7]
    assert len(batch_slices(sizes, device="cuda")) == -(-len(sizes) // GPU_BATCH_SIZE)
    assert batch_slices([], device="cpu") == []
    with pytest.raises(ValueError, match="at least 1"):
        batch_slices(sizes, 0)
