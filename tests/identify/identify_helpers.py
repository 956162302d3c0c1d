"""Tiny MolSpectra models trained here, in-process, on a tiny library, and spectra files of it.

The models are the real ``MolSpectraModel`` (PaiNN + ``DenoisingHead`` + ``MoleculeRepresentation``
+ ``SpectraEncoder(SpecFormer)``), fed through SchNetPack's dataset pipeline with the training
transforms (``NormalizeSpectra``, centre of mass, neighbour list) and trained with the
contrastive loss until every molecule's spectra retrieve its own structure; they are saved as
``best_model`` files like spktrain's. ``identify`` then has to reproduce that pipeline
(normalisation, 3D conversion) on its own for the top-1 assertions to hold.
"""

import schnetpack_molspectra  # noqa: F401  (tblite before torch)

# isort: split
import numpy as np
import pytest
import torch

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.data.spectrum_files import REFERENCE_PEAK
from schnetpack_molspectra.provenance import record_written
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import GRIDS

#: the tiny library: small H/C/N/O molecules, 3D from RDKit (seed 0) as identify builds them
SMILES = ["CCO", "CC=O", "CC#N", "C1CC1", "OC=O", "CN", "COC", "CC(C)=O"]


def synthetic_spectra(seed: int):
    """Distinct spectra per molecule, scaled to the training data's typical peak height."""
    rng = np.random.default_rng(seed)
    spectra = {}
    for m, grid in GRIDS.items():
        n_lines = 4
        centres = rng.uniform(
            grid.start + 0.1 * (grid.stop - grid.start), grid.stop - 0.1 * (grid.stop - grid.start), n_lines
        )
        heights = rng.uniform(0.3, 1.0, n_lines)
        width = 0.3 if m == "uv" else 20.0
        s = broaden(centres, heights, grid, width)[0]
        spectra[m] = (s * REFERENCE_PEAK[m] / s.max()).astype(np.float32)
    return spectra


def library_atoms():
    from schnetpack_molspectra.data.inputs import smiles_to_atoms

    return [smiles_to_atoms(s) for s in SMILES]


def write_query_db(path, atoms_list, spectra, names, smiles):
    from ase.db import connect
    from schnetpack.data import ASEAtomsData

    ASEAtomsData.create(str(path), distance_unit="Ang", property_unit_dict={msp.spectrum_keys[m]: "1" for m in GRIDS})
    with connect(str(path), use_lock_file=False) as conn:
        for atoms, s, name, smi in zip(atoms_list, spectra, names, smiles):
            conn.write(atoms, data={msp.spectrum_keys[m]: v[None, :] for m, v in s.items()}, label=name, smiles=smi)
    return str(path)


def tiny_model(modalities):
    from schnetpack.atomistic import PairwiseDistances
    from schnetpack.nn.cutoff import CosineCutoff
    from schnetpack.nn.radial import GaussianRBF
    from schnetpack.representation import PaiNN

    from schnetpack_molspectra.atomistic import DenoisingHead, MoleculeRepresentation, SpectraEncoder
    from schnetpack_molspectra.model import MolSpectraModel
    from schnetpack_molspectra.specformer import SpecFormer

    torch.manual_seed(0)
    representation = PaiNN(16, 2, GaussianRBF(n_rbf=12, cutoff=5.0), CosineCutoff(5.0))
    specformer = SpecFormer(modalities, n_out=16, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    return MolSpectraModel(
        representation,
        input_modules=[PairwiseDistances()],
        output_modules=[DenoisingHead(16, mode="auto"), MoleculeRepresentation(), SpectraEncoder(specformer)],
    )


def train_tiny(db_path, modalities, steps=150):
    """Contrastive training on the whole (tiny) database as one batch; returns the model and
    the in-batch 3D->spectra top-1 it reached."""
    import schnetpack.transform as trn
    from schnetpack.data import ASEAtomsData, AtomsLoader

    from schnetpack_molspectra.train.losses import info_nce
    from schnetpack_molspectra.train.metrics import retrieval_hits
    from schnetpack_molspectra.transform import NormalizeSpectra

    keys = [msp.spectrum_keys[m] for m in modalities]
    data = ASEAtomsData(
        db_path,
        load_properties=keys,
        transforms=[
            NormalizeSpectra(modalities),
            trn.SubtractCenterOfMass(),
            trn.MatScipyNeighborList(5.0),
            trn.CastTo32(),
        ],
    )
    batch = next(iter(AtomsLoader(data, batch_size=len(data))))
    model = tiny_model(modalities)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        out = model(dict(batch))
        loss = info_nce(out[msp.representation_3d], out[msp.representation_spectra], 0.07, True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(dict(batch))
    top1 = retrieval_hits(out[msp.representation_3d], out[msp.representation_spectra]).float().mean().item()
    return model, top1


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The library files, the query database and two trained models (IR only; UV+IR+Raman)."""
    root = tmp_path_factory.mktemp("identify")
    atoms = library_atoms()
    spectra = [synthetic_spectra(i) for i in range(len(SMILES))]
    names = [f"mol{i}" for i in range(len(SMILES))]
    db = write_query_db(root / "queries.db", atoms, spectra, names, SMILES)
    with open(root / "library.smi", "w") as f:
        f.write("# tiny library\n" + "".join(f"{s} {n}\n" for s, n in zip(SMILES, names)))
    from ase.io import write

    write(str(root / "library.xyz"), atoms, format="extxyz")
    models = {}
    for tag, modalities in (("ir", ["ir"]), ("all", ["uv", "ir", "raman"])):
        model, top1 = train_tiny(db, modalities)
        assert top1 == 1.0, f"the tiny {tag} model did not learn its own library (top-1 {top1})"
        run = root / f"run_{tag}"
        run.mkdir()
        torch.save(model, run / "best_model")
        record_written(str(run / "best_model"))  # as spktrain records the best_model it writes
        models[tag] = str(run / "best_model")
    return {
        "root": root,
        "db": db,
        "smi": str(root / "library.smi"),
        "xyz": str(root / "library.xyz"),
        "spectra": spectra,
        "names": names,
        "atoms": atoms,
        "models": models,
    }
