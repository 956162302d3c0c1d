"""Loss functions of MolSpectra (``loss_fn`` of the task's model outputs), and the cross-rank
communication they and the heads use under distributed data parallel (DDP) training.

Communication happens only inside :func:`collective_step`, which ``MolSpectraTask`` enters in its
training, validation and test steps (every rank runs them in lock-step). Outside it (a callback on
rank 0, a script, a single process) every function here works on the local batch alone, so no
rank ever waits for a collective the others do not join.
"""

import contextlib
import contextvars
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NEGATIVES",
    "collective_step",
    "distributed_world",
    "gather_rows",
    "all_reduce_sum",
    "contrastive_similarities",
    "info_nce",
    "InfoNCELoss",
    "SmoothedLoss",
]

#: contrastive negatives: "global" = the molecules of every rank's batch (one process on the
#: concatenated batch), "local" = the molecules of this rank's batch only (per-device, as the
#: released code computes them)
NEGATIVES = ("global", "local")

_COLLECTIVE = contextvars.ContextVar("schnetpack_molspectra_collective_step", default=False)


@contextlib.contextmanager
def collective_step(enabled: bool = True) -> Iterator[None]:
    """Within this context every rank runs the same forward and loss calls, so losses, metrics and
    heads may communicate across ranks (global negatives, synchronised BatchNorm, noise statistics).

    ``MolSpectraTask`` enters it in ``training_step``, ``validation_step`` and ``test_step``;
    scripts with their own DDP loop enter it around forward + loss. ``enabled=False`` switches
    communication off inside an enclosing context.
    """
    token = _COLLECTIVE.set(enabled)
    try:
        yield
    finally:
        _COLLECTIVE.reset(token)


def distributed_world() -> Tuple[int, int]:
    """(rank, world size) of the default process group inside :func:`collective_step`;
    (0, 1) outside it or without an initialised process group."""
    if _COLLECTIVE.get() and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(x: torch.Tensor, sizes: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, int]:
    """Every rank's rows of ``x`` concatenated in rank order, differentiable, and where this rank's
    rows start in them.

    Args:
        x: (n_rank, ...) this rank's rows; ranks may hold different numbers of rows.
        sizes: every rank's number of rows, when known to all ranks (saves one collective).

    Returns:
        (sum over ranks of n_rank, ...) and the offset of this rank's rows. Outside a collective
        step (or in a world of one): ``x`` itself and 0.

    The gradient of the result w.r.t. this rank's rows is the sum of every rank's gradient w.r.t.
    them (``torch.distributed.nn.functional.all_gather``'s backward): a loss computed on each
    rank from the gathered rows is back-propagated as the sum of the ranks' losses.
    """
    rank, world = distributed_world()
    if world == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    if sizes is None:
        n = torch.tensor([x.shape[0]], device=x.device)
        counts = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(counts, n)
        sizes = [int(c) for c in counts]
    elif len(sizes) != world or sizes[rank] != x.shape[0]:
        raise ValueError(f"rank {rank} of {world} holds {x.shape[0]} rows, sizes says {list(sizes)}")
    longest = max(sizes)
    padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, longest - x.shape[0])) if x.shape[0] < longest else x
    parts = all_gather(padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sum(sizes[:rank])


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over ranks inside a collective step (a new tensor, no gradient); ``x`` itself otherwise."""
    _, world = distributed_world()
    if world == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


class ContrastiveSimilarities(NamedTuple):
    """Cosine similarities of this rank's molecules against the pool of negatives.

    forward: (n_local, n_pool), this rank's anchors against every candidate of the pool.
    backward: (n_local, n_pool), this rank's candidates against every anchor of the pool
        (``None`` unless asked for).
    labels: (n_local,), the column of each row's own partner.
    n_pool: molecules in the pool (the global batch with global negatives under DDP).
    world: ranks that share the pool (1 with local negatives).
    """

    forward: torch.Tensor
    backward: Optional[torch.Tensor]
    labels: torch.Tensor
    n_pool: int
    world: int


def contrastive_similarities(
    anchor: torch.Tensor, candidates: torch.Tensor, negatives: str = "global", both_ways: bool = False
) -> ContrastiveSimilarities:
    """Cosine similarities for InfoNCE and retrieval.

    Args:
        anchor: (n_local, n_features), e.g. this rank's 3D representations.
        candidates: (n_local, n_features), the spectra representations of the same molecules.
        negatives: "global": inside a collective step under DDP the pool is every rank's molecules
            (gathered with gradient); "local": this rank's molecules. Identical in a single process.
        both_ways: also the candidates -> anchor similarities (symmetric InfoNCE).
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    anchor, candidates = F.normalize(anchor, dim=-1), F.normalize(candidates, dim=-1)
    n_local = anchor.shape[0]
    _, world = distributed_world() if negatives == "global" else (0, 1)
    if world == 1:
        sim = anchor @ candidates.T
        labels = torch.arange(n_local, device=sim.device)
        return ContrastiveSimilarities(sim, sim.T if both_ways else None, labels, n_local, 1)
    if both_ways:
        pool, offset = gather_rows(torch.cat([anchor, candidates], dim=-1))
        pool_anchor, pool_candidates = pool.split([anchor.shape[-1], candidates.shape[-1]], dim=-1)
    else:
        pool_candidates, offset = gather_rows(candidates)
    labels = offset + torch.arange(n_local, device=anchor.device)
    backward = candidates @ pool_anchor.T if both_ways else None
    return ContrastiveSimilarities(anchor @ pool_candidates.T, backward, labels, pool_candidates.shape[0], world)


def info_nce(
    anchor: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    symmetric: bool = False,
    negatives: str = "global",
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: cosine similarity / temperature, cross-entropy to the partner.

    Args:
        anchor: (n_molecules, n_features), e.g. 3D representations.
        candidates: (n_molecules, n_features), e.g. spectra representations of the same molecules.
        symmetric: average anchor->candidates and candidates->anchor (paper Eq. 7);
            otherwise only anchor->candidates (released code).
        negatives: "global" or "local" (see :func:`contrastive_similarities`).

    Returns:
        A scalar. In a single process, or with local negatives: the mean over this batch's
        molecules. With global negatives on W ranks holding N molecules in all: this rank's share,
        ``W / N * sum over its molecules``, so that the mean over ranks is the single-process loss of
        the concatenated batch, and so is DDP's average of the ranks' gradients (each rank's
        gradient reaches the other ranks' representations through the gather).
    """
    sims = contrastive_similarities(anchor, candidates, negatives, both_ways=symmetric)
    rows = F.cross_entropy(sims.forward / temperature, sims.labels, reduction="none")
    if symmetric:
        rows = 0.5 * (rows + F.cross_entropy(sims.backward / temperature, sims.labels, reduction="none"))
    if sims.world == 1:
        return rows.mean()
    return rows.sum() * (sims.world / sims.n_pool)


class InfoNCELoss(nn.Module):
    """Contrastive loss between 3D and spectra representations (see :func:`info_nce`).

    Args:
        temperature: tau.
        symmetric: paper Eq. 7 (both directions) instead of 3D -> spectra only (released).
        negatives: "global" (default): under DDP every rank's molecules are negatives, so N
            devices with batch B train as one device with batch N * B; "local": each device's
            own batch only. The same in a single process.
    """

    def __init__(self, temperature: float = 0.07, symmetric: bool = False, negatives: str = "global"):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        self.temperature = temperature
        self.symmetric = symmetric
        self.negatives = negatives

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("negatives", "global")  # pickled before negatives existed

    def forward(self, anchor: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return info_nce(anchor, candidates, self.temperature, self.symmetric, self.negatives)


class SmoothedLoss(nn.Module):
    """A loss smoothed by an exponential moving average over batches (TorchMD-Net's
    ``ema_alpha_y`` / ``ema_alpha_dy``, released MD17 recipe: 0.05 on the energy).

    Returns ``alpha * loss + (1 - alpha) * previous``, where ``previous`` is the last
    returned value, detached (on the first batch: the loss itself); training and evaluation keep separate averages. Its value
    is smoothed, and its gradient is ``alpha`` times the loss's gradient: with
    ``loss_weight`` w the term is trained with weight ``alpha * w``. ``alpha = 1`` is the plain loss.
    """

    def __init__(self, loss_fn: nn.Module, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha <= 1:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.loss_fn = loss_fn
        self.alpha = alpha
        self.previous: Dict[bool, torch.Tensor] = {}

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(prediction, target)
        if self.alpha == 1:
            return loss
        previous = self.previous.get(self.training, loss.detach())  # first batch: the loss itself
        loss = self.alpha * loss + (1 - self.alpha) * previous.to(loss.device)
        self.previous[self.training] = loss.detach()
        return loss
