"""Pre-training under distributed data parallel: 2 CPU processes (gloo) against 1 process.

- the contrastive loss with global negatives on 2 ranks is the single-process loss of the
  concatenated batch (mean over ranks), and DDP's averaged gradients are its gradients; local
  negatives are each rank's own InfoNCE; a whole MolSpectra model with ``sync_batchnorm`` gives the
  single-process gradients too, per-device BatchNorm (released) does not;
- the denoising head's running noise statistics and synchronised BatchNorm statistics are the same
  on every rank (and the single-process ones); patch masks and coordinate noise differ per rank;
- ``spktrain experiment=molspectra_pretrain trainer=ddp_trainer`` on 2 CPU processes finishes in one
  run directory, and a run stopped after one epoch and resumed continues as an uninterrupted one.
"""

import os
import socket

import pytest
import schnetpack as spk
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import write_spectra_db
from schnetpack import properties as structure
from spktrain import TINY_PRETRAIN, TINY_SPECFORMER, run_dir, spktrain
from torch.nn.parallel import DistributedDataParallel

import schnetpack_molspectra.properties as msp
from schnetpack_molspectra.atomistic import DenoisingHead, MoleculeRepresentation, SpectraEncoder
from schnetpack_molspectra.configs import pretraining_transforms
from schnetpack_molspectra.distributed import collective_step
from schnetpack_molspectra.model import MolSpectraModel
from schnetpack_molspectra.specformer import SpecFormer, SyncBatchNorm1d
from schnetpack_molspectra.task import ContrastiveOutput
from schnetpack_molspectra.train.losses import InfoNCELoss
from schnetpack_molspectra.train.metrics import InfoNCE, RetrievalAccuracy, retrieval_hits
from schnetpack_molspectra.transform import GaussianCoordinateNoise, MaskSpectraPatches

WORLD = 2
SPLIT = [slice(0, 5), slice(5, 8)]  # uneven on purpose: 5 + 3 molecules
TAU = 0.07


# --- helpers, run in every rank -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, workdir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(_rank_checks(rank, workdir), os.path.join(workdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


class Encoders(torch.nn.Module):
    """Two linear encoders, the 3D and the spectra side of the contrastive loss."""

    def __init__(self):
        super().__init__()
        self.f, self.g = torch.nn.Linear(5, 4), torch.nn.Linear(6, 4)

    def forward(self, x, y):
        return self.f(x), self.g(y)


def features():
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 5, generator=g), torch.randn(7, 6, generator=g)


def encoders():
    torch.manual_seed(0)
    return Encoders()


def bn_inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 4, generator=g) * 2 + 1, torch.randn(6, 3, 4, generator=g)


def sync_bn():
    torch.manual_seed(2)
    bn = SyncBatchNorm1d(3)
    torch.nn.init.normal_(bn.weight)
    torch.nn.init.normal_(bn.bias)
    return bn


def tiny_model(sync_batchnorm: bool) -> MolSpectraModel:
    torch.manual_seed(0)
    radial = spk.nn.GaussianRBF(n_rbf=8, cutoff=5.0)
    return MolSpectraModel(
        representation=spk.representation.PaiNN(16, 1, radial, spk.nn.CosineCutoff(5.0)),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            DenoisingHead(n_in=16, mode="auto"),
            MoleculeRepresentation(),
            SpectraEncoder(SpecFormer(n_out=16, d_model=16, n_heads=4, d_ff=16, sync_batchnorm=sync_batchnorm)),
        ],
    )


def collate(molecules):
    from schnetpack.data.loader import _atoms_collate_fn

    return _atoms_collate_fn([{k: v.clone() for k, v in m.items()} for m in molecules])


def contrastive_step(model, batch, negatives="global"):
    """Training-mode forward and the contrastive term, inside a collective step as in MolSpectraTask."""
    with collective_step():
        pred = model(batch)
        loss = ContrastiveOutput(loss_fn=InfoNCELoss(TAU, negatives=negatives)).calculate_loss(pred)
    loss.backward()
    return loss.detach()


def grads(module):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def _draws(transforms):
    inputs = {structure.R: torch.zeros(6, 3)}
    for t in transforms:
        inputs = t(inputs)
    return inputs[msp.patch_mask("ir")], inputs[msp.position_noise]


class _Molecules(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return dict(zip(("mask", "noise"), _draws([MaskSpectraPatches(0.5), GaussianCoordinateNoise()])))


def _rank_checks(rank, workdir):
    out = {}
    # (a) contrastive loss alone, two linear encoders, DDP-averaged gradients
    x, y = features()
    rows = [slice(0, 4), slice(4, 7)][rank]
    for negatives in ("global", "local"):
        for symmetric in (False, True):
            model = encoders()
            ddp = DistributedDataParallel(model)
            with collective_step():
                a, c = ddp(x[rows], y[rows])
                loss = InfoNCELoss(TAU, symmetric, negatives)(a, c)
            loss.backward()
            out[("linear", negatives, symmetric)] = {"loss": loss.detach(), "grads": grads(model)}
        # metrics: updated per rank in a collective step, reduced over ranks by torchmetrics' compute()
        a, c = encoders()(x[rows], y[rows])
        infonce, top1 = InfoNCE(TAU, negatives=negatives), RetrievalAccuracy(negatives=negatives)
        with collective_step():
            for _ in range(2):  # two steps with the same batch: the value of one
                infonce.update(a, c)
                top1.update(a, c)
        out[("metrics", negatives)] = (infonce.compute(), top1.compute())

    # SyncBatchNorm1d on (n, C, L) inputs, 4 + 2 rows
    x3, w3 = bn_inputs()
    chunk = x3[[slice(0, 4), slice(4, 6)][rank]].clone().requires_grad_()
    bn = sync_bn()
    with collective_step():
        y3 = bn(chunk)
    (y3 * w3[[slice(0, 4), slice(4, 6)][rank]]).sum().backward()
    out["bn3d"] = (y3.detach(), chunk.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var)

    # (a) + (b) a whole MolSpectra model on molecules, per-device and synchronised BatchNorm
    data = torch.load(os.path.join(workdir, "inputs.pt"), weights_only=False)
    for sync in (True, False):
        model = tiny_model(sync)
        model.load_state_dict(data["state"])
        model.train()
        ddp = DistributedDataParallel(model, find_unused_parameters=True)  # heads outside the contrastive term
        batch = collate(data["molecules"][SPLIT[rank]])
        loss = contrastive_step(ddp, batch)
        layer = model.output_modules[2].specformer.layers[0]
        out[("model", sync)] = {
            "loss": loss,
            "grads": grads(model),
            "noise": (model.output_modules[0].scale.sum_squares.clone(), model.output_modules[0].scale.count.clone()),
            "bn": (layer.norm_attention.running_mean.clone(), layer.norm_attention.running_var.clone()),
        }
    assert isinstance(layer.norm_attention, torch.nn.BatchNorm1d)

    # (b) data-augmentation draws: same seed on every rank, different draws, reproducible
    transforms = [MaskSpectraPatches(0.5), GaussianCoordinateNoise()]
    torch.manual_seed(0)
    out["draws"] = _draws(transforms)
    torch.manual_seed(0)
    out["draws_again"] = _draws(transforms)
    torch.manual_seed(
        0
    )  # the same in a dataloader worker (forked, as on Linux by default; spawn's children would spawn)
    loader = torch.utils.data.DataLoader(_Molecules(), batch_size=2, num_workers=1, multiprocessing_context="fork")
    out["worker_draws"] = next(iter(loader))
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Results of ``_rank_checks`` on each of 2 gloo ranks, and the inputs and state they started from."""
    workdir = tmp_path_factory.mktemp("ddp")
    db = write_spectra_db(workdir / "spectra.db", n_molecules=8)
    dataset = spk.data.ASEAtomsData(db, transforms=pretraining_transforms())
    torch.manual_seed(0)
    molecules = [dataset[i] for i in range(8)]
    state = tiny_model(sync_batchnorm=False).state_dict()
    torch.save({"molecules": molecules, "state": state}, workdir / "inputs.pt")
    mp.spawn(_rank_main, args=(WORLD, free_port(), str(workdir)), nprocs=WORLD, join=True)
    results = [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return results, {"molecules": molecules, "state": state}


def assert_close_grads(actual, expected, rtol=1e-4, atol=1e-6):
    """Every parameter's gradient; ``atol`` relative to the largest gradient of all (the gradient of a
    bias in front of BatchNorm is zero up to rounding, so only the overall scale measures its error)."""
    assert actual.keys() == expected.keys()
    scale = max(g.abs().max() for g in expected.values())
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=atol * scale, msg=name)


# --- (a) contrastive loss and gradients ---------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
def test_global_negatives_are_one_process_on_the_concatenated_batch(ranks, symmetric):
    results, _ = ranks
    x, y = features()
    model = encoders()
    reference = InfoNCELoss(TAU, symmetric)(*model(x, y))
    reference.backward()
    per_rank = [r[("linear", "global", symmetric)] for r in results]
    # each rank holds its share (W / N * its molecules' terms): their mean is the loss of all 7 molecules
    torch.testing.assert_close(sum(r["loss"] for r in per_rank) / WORLD, reference.detach())
    for r in per_rank:  # DDP's average of the ranks' gradients is the single-process gradient
        assert_close_grads(r["grads"], grads(model))
    local = [r[("linear", "local", symmetric)]["loss"] for r in results]
    assert not torch.allclose(per_rank[0]["loss"], local[0])  # the other rank's molecules are negatives


@pytest.mark.parametrize("symmetric", [False, True])
def test_local_negatives_are_each_ranks_own_infonce(ranks, symmetric):
    results, _ = ranks
    x, y = features()
    expected_grads = None
    for rank, rows in enumerate([slice(0, 4), slice(4, 7)]):
        model = encoders()
        loss = InfoNCELoss(TAU, symmetric, negatives="local")(*model(x[rows], y[rows]))
        loss.backward()
        torch.testing.assert_close(results[rank][("linear", "local", symmetric)]["loss"], loss.detach())
        chunk = grads(model)
        expected_grads = (
            chunk if expected_grads is None else {n: (g + chunk[n]) / WORLD for n, g in expected_grads.items()}
        )
    for r in results:  # DDP averages the two ranks' gradients
        assert_close_grads(r[("linear", "local", symmetric)]["grads"], expected_grads)


def test_metrics_reduced_over_ranks_are_the_single_process_values(ranks):
    """InfoNCE and top-1 retrieval, updated on each rank and computed (torchmetrics reduces over
    ranks): with global negatives the values of one process on the concatenated batch; with local
    negatives the InfoNCE is the mean of the ranks' own values."""
    results, _ = ranks
    x, y = features()
    a, c = encoders()(x, y)
    for r in results:
        infonce, top1 = r[("metrics", "global")]
        torch.testing.assert_close(infonce, InfoNCELoss(TAU)(a, c).detach())
        torch.testing.assert_close(top1, retrieval_hits(a, c).float().mean())
        local_infonce, _ = r[("metrics", "local")]
        per_rank = [InfoNCELoss(TAU)(a[rows], c[rows]).detach() for rows in (slice(0, 4), slice(4, 7))]
        torch.testing.assert_close(local_infonce, sum(per_rank) / WORLD)


def test_molspectra_model_with_sync_batchnorm_matches_one_process(ranks):
    """PaiNN + SpecFormer, 5 + 3 molecules on 2 ranks, against 8 molecules in one process: the same
    contrastive loss and gradients with synchronised BatchNorm; per-device BatchNorm differs."""
    results, inputs = ranks
    model = tiny_model(sync_batchnorm=True)
    model.load_state_dict(inputs["state"])
    model.train()
    loss = contrastive_step(model, collate(inputs["molecules"]))  # one process: nothing to communicate
    torch.testing.assert_close(sum(r[("model", True)]["loss"] for r in results) / WORLD, loss, rtol=1e-5, atol=1e-6)
    for r in results:
        assert_close_grads(r[("model", True)]["grads"], grads(model), rtol=1e-3, atol=1e-4)
    specformer = {n: g for n, g in grads(model).items() if ".specformer." in n}
    per_device = {n: g for n, g in results[0][("model", False)]["grads"].items() if ".specformer." in n}
    assert max((per_device[n] - g).abs().max() for n, g in specformer.items()) > 0.1  # O(1) apart
    # (b) the statistics the step updated are the single-process ones, on every rank
    head, layer = model.output_modules[0].scale, model.output_modules[2].specformer.layers[0].norm_attention
    for r in results:
        for sync in (True, False):
            sum_squares, count = r[("model", sync)]["noise"]
            assert count == head.count == 3 * sum(int(m[structure.n_atoms]) for m in inputs["molecules"])
            torch.testing.assert_close(sum_squares, head.sum_squares)
        torch.testing.assert_close(r[("model", True)]["bn"][0], layer.running_mean, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(r[("model", True)]["bn"][1], layer.running_var, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(results[0][("model", False)]["bn"][0], results[1][("model", False)]["bn"][0])


# --- (b) data-augmentation draws --------------------------------------------------------------


def test_masks_and_noise_differ_across_ranks_and_are_reproducible(ranks):
    results, _ = ranks
    (mask0, noise0), (mask1, noise1) = results[0]["draws"], results[1]["draws"]
    assert not torch.equal(mask0, mask1) and not torch.allclose(noise0, noise1)
    for r in results:
        assert all(torch.equal(a, b) for a, b in zip(r["draws"], r["draws_again"]))  # same seed, same draws
        assert r["draws"][0].sum() == MaskSpectraPatches(0.5).n_masked("ir")
    assert not torch.equal(results[0]["worker_draws"]["mask"], results[1]["worker_draws"]["mask"])
    assert not torch.allclose(results[0]["worker_draws"]["noise"], results[1]["worker_draws"]["noise"])


def test_single_process_draws_are_unchanged():
    """Without a process group the transforms draw from torch's global generator, as always."""
    transform = MaskSpectraPatches(0.5)
    torch.manual_seed(3)
    mask, noise = _draws([transform, GaussianCoordinateNoise(0.04)])
    torch.manual_seed(3)
    expected = torch.zeros(transform.n_patches["ir"], dtype=torch.bool)
    for m in transform.modalities:  # uv, ir, raman: one permutation each, then the noise
        perm = torch.randperm(transform.n_patches[m])
        if m == "ir":
            expected[perm[: transform.n_masked("ir")]] = True
    assert torch.equal(mask[0], expected)
    torch.testing.assert_close(noise, torch.randn(6, 3) * 0.04)


def test_sync_batchnorm_is_batchnorm_on_the_concatenated_batch(ranks):
    """(n, C, L) inputs split 4 + 2 over the ranks: outputs, input gradients and running statistics
    are BatchNorm's on all 6; the ranks' parameter gradients add up to its (DDP then averages them)."""
    results, _ = ranks
    x, w = bn_inputs()
    x.requires_grad_()
    bn = sync_bn()  # outside a collective step: plain BatchNorm1d
    y = bn(x)
    (y * w).sum().backward()
    for rank, rows in enumerate([slice(0, 4), slice(4, 6)]):
        y_rank, grad_x, _, _, running_mean, running_var = results[rank]["bn3d"]
        torch.testing.assert_close(y_rank, y.detach()[rows])
        torch.testing.assert_close(grad_x, x.grad[rows])
        torch.testing.assert_close(running_mean, bn.running_mean)
        torch.testing.assert_close(running_var, bn.running_var)
    torch.testing.assert_close(results[0]["bn3d"][2] + results[1]["bn3d"][2], bn.weight.grad)
    torch.testing.assert_close(results[0]["bn3d"][3] + results[1]["bn3d"][3], bn.bias.grad)


def test_sync_batchnorm_is_batchnorm_outside_distributed_steps(device):
    torch.manual_seed(0)
    sync, plain = SyncBatchNorm1d(4).to(device), torch.nn.BatchNorm1d(4).to(device)
    x = (torch.randn(10, 4) * 3 + 1).to(device)
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync.running_var, plain.running_var)
    assert sync.state_dict().keys() == plain.state_dict().keys()


def test_smoothed_loss_averages_travel_with_the_checkpoint():
    """The task's state outside the weights (SmoothedLoss's running averages) is in its checkpoint."""
    from schnetpack.task import ModelOutput

    from schnetpack_molspectra.task import MolSpectraTask
    from schnetpack_molspectra.train.losses import SmoothedLoss

    def task():
        energy = ModelOutput("energy", loss_fn=SmoothedLoss(torch.nn.MSELoss(), 0.05), metrics={})
        return MolSpectraTask(model=tiny_model(False), outputs=[energy], optimizer_args={"lr": 1e-3})

    saved, checkpoint = task(), {}
    saved.outputs[0].loss_fn.previous = {True: torch.tensor(2.0), False: torch.tensor(3.0)}
    saved.on_save_checkpoint(checkpoint)
    loaded = task()
    loaded.on_load_checkpoint(checkpoint)
    assert loaded.outputs[0].loss_fn.previous == {True: torch.tensor(2.0), False: torch.tensor(3.0)}


# --- (c) + (d) spktrain on 2 CPU processes ------------------------------------------------------

DDP = ["trainer=ddp_trainer", "trainer.accelerator=cpu", "trainer.devices=2", "+seed=11"]


@pytest.fixture(scope="module")
def ddp_db(tmp_path_factory):
    return write_spectra_db(tmp_path_factory.mktemp("ddp_data") / "spectra.db", n_molecules=40)


def ddp_overrides(db, epochs):
    tiny = [o for o in TINY_PRETRAIN if not o.startswith(("trainer.max_epochs", "trainer.accelerator"))]
    return [
        "experiment=molspectra_pretrain",
        f"data.datapath={db}",
        *tiny,
        *TINY_SPECFORMER,
        *DDP,
        "globals.sync_batchnorm=true",
        f"trainer.max_epochs={epochs}",
    ]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, ddp_db):
    """One epoch on 2 CPU processes (DDP, gloo) with the default run id, then the same command with
    that run's id and 2 epochs, which resumes from its last checkpoint."""
    cwd = tmp_path_factory.mktemp("ddp_run")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_PORT", "MASTER_ADDR", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "RANK")
    }
    spktrain(cwd, *ddp_overrides(ddp_db, 1), env=env, timeout=400)
    run = run_dir(cwd)  # exactly one run directory: rank 1 ran in rank 0's
    stopped = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), weights_only=False, map_location="cpu")
    resumed = spktrain(cwd, *ddp_overrides(ddp_db, 2), f"run.id={os.path.basename(run)}", env=env, timeout=400)
    final = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), weights_only=False, map_location="cpu")
    return run, stopped, resumed, final


def noise_count(ckpt):
    return next(v for k, v in ckpt["state_dict"].items() if k.endswith("scale.count")).item()


def training_atoms(run, db_path):
    import numpy as np
    from ase.db import connect

    train = np.load(os.path.join(run, "split.npz"))["train_idx"]
    with connect(db_path) as db:
        return len(train), sum(db.get(id=int(i) + 1).natoms for i in train)


@pytest.mark.slow
def test_spktrain_ddp_run_writes_best_model_in_one_run_directory(ddp_runs, ddp_db):
    run, stopped, _, _ = ddp_runs
    assert os.path.exists(os.path.join(run, "train_ddp_process_1.log"))  # rank 1's log, in rank 0's directory
    model = torch.load(os.path.join(run, "best_model"), weights_only=False)
    assert isinstance(model.output_modules[2].specformer.layers[0].norm_attention, SyncBatchNorm1d)
    n_train, atoms = training_atoms(run, ddp_db)
    assert stopped["epoch"] == 0 and stopped["global_step"] == n_train // (2 * 8)  # 16 molecules a step: 8 per rank
    # the running noise statistics count every rank's molecules: 3 x the atoms of the training split
    assert noise_count(stopped) == 3 * atoms


@pytest.mark.slow
def test_stopped_ddp_run_resumes_as_an_uninterrupted_one(ddp_runs, ddp_db):
    """Resumed to 2 epochs, the run ends where an uninterrupted 2-epoch run ends: step count, LR
    schedule position, running noise statistics (every training molecule of both epochs, once)."""
    run, stopped, resumed, final = ddp_runs
    assert "Resuming from checkpoint" in resumed.stdout + resumed.stderr
    n_train, atoms = training_atoms(run, ddp_db)
    assert final["epoch"] == 1 and final["global_step"] == 2 * stopped["global_step"] == 2 * n_train // 16
    assert final["lr_schedulers"][0]["last_epoch"] == final["global_step"]
    assert noise_count(final) == 2 * noise_count(stopped) == 2 * 3 * atoms
    assert os.path.exists(os.path.join(run, "best_model"))
