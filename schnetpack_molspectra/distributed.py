"""Cross-rank communication under distributed data parallel (DDP) training, shared by the model's
heads (``atomistic``, ``specformer``) and the losses and metrics (``train``).

Communication happens only inside :func:`collective_step`, which ``MolSpectraTask`` enters in its
training, validation and test steps (every rank runs them in lock-step). Outside it (a callback on
rank 0, a script, a single process) every function here works on the local batch alone, so no
rank ever waits for a collective the others do not join.
"""

import contextlib
import contextvars
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["collective_step", "distributed_world", "gather_rows", "all_reduce_sum"]

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
    from torch.distributed.nn.functional import all_gather  # only in a DDP run (absent from some torch builds)

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
