"""Learning-rate schedules of the released MolSpectra recipes (stepped every optimiser step)."""

import math
from typing import Optional

import torch

__all__ = ["resolve_steps", "WarmupCosineLR"]


def resolve_steps(steps: float, run_steps: Optional[int], name: str, whole: bool = True) -> float:
    """A step count given absolutely (an int >= 1) or as a fraction of the run (a float in (0, 1]).

    A fraction is rounded to whole steps, or with ``whole=False`` kept exact (cosine periods: three
    periods of 1/7, 2/7 and 4/7 of a 960-step run end with it, while 137-step ones would restart
    the learning rate on its last step)."""
    if isinstance(steps, float) and 0 < steps <= 1:
        if run_steps is None or not math.isfinite(run_steps):
            raise ValueError(
                f"{name}={steps} is a fraction of the run, but the run's length is unknown: "
                f"set trainer.max_epochs or trainer.max_steps, or give {name} in steps"
            )
        return max(1, round(steps * run_steps)) if whole else max(1.0, steps * run_steps)
    if steps < 0 or steps != int(steps):
        raise ValueError(f"{name} must be a whole number of steps or a fraction in (0, 1], got {steps}")
    return int(steps)


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up, then cosine annealing to ``min_lr`` (optionally with warm restarts), per step.

    As in the released MolSpectra / TorchMD-Net code, the cosine is counted from step 0 and
    the warm-up overrides it for the first ``warmup_steps`` steps: the learning rate is
    ``lr * (step + 1) / warmup_steps`` during warm-up, then ``min_lr + (lr - min_lr) *
    (1 + cos(pi * t / T)) / 2``, with t the step within the current cosine period of length T.

    Args:
        warmup_steps: length of the linear warm-up.
        total_steps: length of the (first) cosine period. Without restarts the learning rate
            stays at ``min_lr`` after it.
        restart_mult: None: one cosine (pre-training: ``CosineAnnealingLR``). A number:
            warm restarts, each period ``restart_mult`` times longer than the one before
            (QM9 fine-tuning: ``CosineAnnealingWarmRestarts(T_0=total_steps, T_mult=2)``).
        run_steps: the run's number of optimiser steps (``MolSpectraTask`` passes Lightning's
            ``trainer.estimated_stepping_batches``). ``warmup_steps`` and ``total_steps`` given
            as a float in (0, 1] are fractions of it, so a schedule scales with the run (the
            warm-up rounded to whole steps, the cosine period exact).
    """

    def __init__(
        self,
        optimizer,
        warmup_steps: float = 10_000,
        total_steps: float = 400_000,
        min_lr: float = 1e-7,
        restart_mult: Optional[float] = None,
        run_steps: Optional[int] = None,
    ):
        warmup = resolve_steps(warmup_steps, run_steps, "warmup_steps")
        period = max(1, resolve_steps(total_steps, run_steps, "total_steps", whole=False))
        if restart_mult is not None and restart_mult < 1:
            raise ValueError(f"restart_mult must be >= 1, got {restart_mult}")
        self.warmup_steps, self.period = warmup, period
        base = optimizer.param_groups[0]["lr"]
        floor = min(min_lr / base, 1.0) if base > 0 else 0.0

        def position(step: int) -> float:
            """Fraction of the current cosine period that has passed."""
            if restart_mult is None:
                return min(1.0, step / period)
            if restart_mult == 1:
                return (step % period) / period
            cycle = int(math.log(step / period * (restart_mult - 1) + 1, restart_mult))
            start = period * (restart_mult**cycle - 1) / (restart_mult - 1)
            length = period * restart_mult**cycle
            if step < start:  # floating-point edge at a cycle boundary
                start, length = start - length / restart_mult, length / restart_mult
            elif step >= start + length:
                start, length = start + length, length * restart_mult
            return (step - start) / length

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * position(step)))

        super().__init__(optimizer, factor)
