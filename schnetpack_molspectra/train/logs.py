"""Reading what a run logged: the scalars of its TensorBoard event files."""

import glob
import os
from typing import Dict, List, Tuple

__all__ = ["read_scalars"]


def read_scalars(run: str) -> Dict[str, List[Tuple[int, float]]]:
    """Every scalar logged below the run directory ``run`` (all its ``events.out.tfevents.*`` files):
    tag -> ``[(step, value), ...]`` sorted by step; for a step logged twice (a resumed run) the
    later file's value.

    Raises:
        FileNotFoundError: no event file below ``run`` (named).
    """
    # tensorboard's event reader takes half a second to import: only here, where it is used
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(glob.glob(os.path.join(run, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        raise FileNotFoundError(f"{run}: no TensorBoard event files (events.out.tfevents.*) below it")
    series: Dict[str, Dict[int, float]] = {}
    for path in files:
        acc = EventAccumulator(path, size_guidance={"scalars": 0})  # 0: every event, not a sample
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return {tag: sorted(points.items()) for tag, points in series.items()}
