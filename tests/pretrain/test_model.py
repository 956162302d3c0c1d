"""The pre-training model with PaiNN, SchNet and SO3net: equivariance and one training step each."""

import numpy as np
import pytest
import schnetpack as spk
import torch
from schnetpack import properties as structure
from scipy.spatial.transform import Rotation

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import DenoisingHead, MoleculeRepresentation, SpectraEncoder
from schnetpack_molspectra.configs import pretraining_transforms
from schnetpack_molspectra.data.datamodule import MolSpectraDataModule
from schnetpack_molspectra.model import MolSpectraModel
from schnetpack_molspectra.specformer import SpecFormer
from schnetpack_molspectra.task import MaskedPatchReconstructionOutput, MolSpectraTask, SelfSupervisedOutput
from schnetpack_molspectra.train import InfoNCELoss

CUTOFF = 5.0


def representation(name, width=16):
    radial = spk.nn.GaussianRBF(n_rbf=8, cutoff=CUTOFF)
    cutoff_fn = spk.nn.CosineCutoff(CUTOFF)
    if name == "painn":
        return spk.representation.PaiNN(width, 2, radial, cutoff_fn)
    if name == "schnet":
        return spk.representation.SchNet(width, 2, radial, cutoff_fn)
    return spk.representation.SO3net(width, 2, lmax=1, radial_basis=radial, cutoff_fn=cutoff_fn)


def build_model(name, with_specformer=True, width=16):
    heads = [DenoisingHead(n_in=width, mode="auto"), MoleculeRepresentation()]
    if with_specformer:
        heads.append(SpectraEncoder(SpecFormer(n_out=width, d_model=16, n_heads=4, d_ff=16)))
    return MolSpectraModel(
        representation=representation(name, width),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=heads,
    )


def datamodule(path, batch_size=6):
    dm = MolSpectraDataModule(
        datapath=path,
        batch_size=batch_size,
        num_train=12,
        num_val=6,
        num_workers=0,
        split_file=None,
        transforms=pretraining_transforms(f"globals.cutoff={CUTOFF}"),
    )
    dm.setup()
    return dm


def pretraining_outputs():
    return [
        SelfSupervisedOutput("denoising", msp.predicted_noise, msp.noise_target, torch.nn.MSELoss()),
        MaskedPatchReconstructionOutput(),
        SelfSupervisedOutput("contrastive", msp.representation_3d, msp.representation_spectra, InfoNCELoss()),
    ]


def rotated(batch, rotation):
    out = {k: v.clone() for k, v in batch.items()}
    out[structure.R] = batch[structure.R] @ rotation.T
    return out


@pytest.mark.parametrize("name,mode", [("painn", "vector"), ("so3net", "vector"), ("schnet", "gradient")])
def test_denoising_head_is_rotation_equivariant(spectra_db, name, mode):
    torch.manual_seed(0)
    model = build_model(name, with_specformer=False).eval()
    assert model.output_modules[0].mode == mode
    batch = next(iter(datamodule(spectra_db).val_dataloader()))
    rotation = torch.tensor(Rotation.random(random_state=1).as_matrix(), dtype=torch.float32)
    pred = model({k: v.clone() for k, v in batch.items()})[msp.predicted_noise].detach()
    pred_rot = model(rotated(batch, rotation))[msp.predicted_noise].detach()
    assert pred.shape == batch[structure.R].shape
    assert pred.abs().max() > 1e-4
    assert torch.allclose(pred_rot, pred @ rotation.T, atol=1e-4)
    # the 3D representation used for the contrastive loss is invariant
    rep = model({k: v.clone() for k, v in batch.items()})[msp.representation_3d].detach()
    rep_rot = model(rotated(batch, rotation))[msp.representation_3d].detach()
    assert torch.allclose(rep, rep_rot, atol=1e-4)


@pytest.mark.parametrize("name", ["painn", "schnet", "so3net"])
def test_each_encoder_completes_a_pretraining_step(spectra_db, name, device):
    torch.manual_seed(0)
    model = build_model(name)
    task = MolSpectraTask(model=model, outputs=pretraining_outputs(), optimizer_args={"lr": 1e-3}).to(device)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    batch = {k: v.to(device) for k, v in next(iter(datamodule(spectra_db).train_dataloader())).items()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    task.train()
    pred = task.predict_without_postprocessing({k: v.clone() for k, v in batch.items()})
    terms = [o.calculate_loss(pred) for o in task.outputs]
    assert all(torch.isfinite(t) and t > 0 for t in terms)
    loss = task.loss_fn(pred, {})
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("representation.") for n in changed)
    assert any(n.startswith("output_modules.2.specformer.") for n in changed)
    assert any(n.startswith("output_modules.0.") for n in changed)
    # MPR compares exactly the masked patches: 7 UV + 14 IR + 14 Raman per molecule
    n_mol = len(batch[structure.n_atoms])
    assert pred[msp.reconstructed_patches("uv")].shape == (7 * n_mol, 20)
    assert pred[msp.target_patches("ir")].shape == (14 * n_mol, 50)


def test_running_noise_scale_is_saved_and_standardises_target(spectra_db):
    torch.manual_seed(0)
    model = build_model("painn", with_specformer=False)
    head = model.output_modules[0]
    loader = datamodule(spectra_db).train_dataloader()
    model.train()
    for batch in loader:
        model(batch)
    assert head.scale.scale.item() == pytest.approx(0.04, rel=0.15)
    assert "output_modules.0.scale.sum_squares" in model.state_dict()
    model.eval()
    out = model(next(iter(loader)))
    assert out[msp.noise_target].std().item() == pytest.approx(1.0, rel=0.3)


def test_batch_without_an_enabled_modality_is_named(spectra_db):
    model = build_model("painn")
    batch = next(iter(datamodule(spectra_db).train_dataloader()))
    batch.pop(msp.raman_spectrum)
    with pytest.raises(KeyError, match="raman_spectrum"):
        model(batch)


def test_withheld_modality_is_fed_as_identify_feeds_a_missing_one_and_left_out_of_mpr(spectra_db):
    """Modality dropout: SpecFormer sees a withheld modality exactly as ``identify`` gives a missing
    one, so the training signal covers the queries identify makes; MPR is computed on the rest."""
    from schnetpack_molspectra.data.spectrum_files import read_spectra
    from schnetpack_molspectra.identify import EmbeddingModel, encode_spectra

    torch.manual_seed(0)
    model = build_model("painn").eval()
    encoder = model.output_modules[2]
    batch = next(iter(datamodule(spectra_db).train_dataloader()))
    n_mol = len(batch[structure.n_atoms])
    withheld = {"uv": [1], "ir": [0, 3], "raman": []}  # molecule 2 keeps all three
    for m, rows in withheld.items():
        flags = torch.zeros(n_mol, dtype=torch.bool)
        flags[rows] = True
        batch[msp.modality_dropped(m)] = flags
    unmasked = {k: v for k, v in batch.items() if not k.endswith("_patch_mask")}
    with torch.no_grad():
        trained_on = torch.nn.functional.normalize(encoder(dict(unmasked))[msp.representation_spectra], dim=-1)

    records = read_spectra(spectra_db)  # one per database row, in order
    queries = []
    for i, row in enumerate(batch[structure.idx][:4].tolist()):  # the batch's rows
        record = records[row]
        kept = {m: v for m, v in record.spectra.items() if i not in withheld[m]}
        queries.append(type(record)(record.name, kept, record.source))
    enc = EmbeddingModel("tiny", model, encoder, model.output_modules[1], CUTOFF)
    identified = encode_spectra(enc, queries, rescale="none")
    assert identified.shape == (4, 16)
    np.testing.assert_allclose(identified, trained_on[:4].numpy(), atol=1e-5)

    # with the patch masks of MPR: the withheld modalities' patches are no reconstruction targets
    task = MolSpectraTask(model=model.train(), outputs=pretraining_outputs(), optimizer_args={"lr": 1e-3})
    pred = task.predict_without_postprocessing({k: v.clone() for k, v in batch.items()})
    assert pred[msp.reconstructed_patches("ir")].shape == (14 * (n_mol - 2), 50)
    assert pred[msp.reconstructed_patches("uv")].shape == (7 * (n_mol - 1), 20)
    assert pred[msp.target_patches("raman")].shape == (14 * n_mol, 50)
    assert all(torch.isfinite(o.calculate_loss(pred)) for o in task.outputs)
