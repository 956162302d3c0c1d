"""Run the stock ``spktrain`` CLI in a subprocess, as a user would, with tiny model sizes."""

import glob
import os
import shutil
import subprocess
import sys

from schnetpack_molspectra.train.logs import read_scalars

TINY_ENCODER = [
    "model.representation.n_atom_basis=16",
    "model.representation.n_interactions=1",
    "model.representation.radial_basis.n_rbf=8",
]
TINY_PRETRAIN = [
    "trainer.max_epochs=1",
    "trainer.max_steps=-1",
    "trainer.accelerator=cpu",
    "data.batch_size=8",
    "data.num_workers=0",
    "globals.warmup_steps=2",
    "globals.total_steps=20",
    "~callbacks.ema",
    "+trainer.log_every_n_steps=1",
    *TINY_ENCODER,
]
SPECFORMER = "model.output_modules.spectra.specformer"
TINY_SPECFORMER = [f"{SPECFORMER}.d_model=16", f"{SPECFORMER}.n_heads=4", f"{SPECFORMER}.d_ff=16"]


def cli(command):
    """The path of a console script (spktrain, spkmd, ...) of the Python running the tests.

    Next to ``sys.executable`` first, so that a suite run with ``venv/bin/python -m pytest``
    tests that environment's SchNetPack, not whatever ``spktrain`` comes first on PATH.
    """
    beside = os.path.join(os.path.dirname(sys.executable), command)
    return beside if os.path.exists(beside) else shutil.which(command) or command


def spktrain(cwd, *overrides, command="spktrain", env=None, check=True, timeout=300):
    """Run ``command`` with ``overrides`` in ``cwd``; return the CompletedProcess."""
    os.makedirs(cwd, exist_ok=True)
    full_env = dict(os.environ, **(env or {}))
    full_env["PWD"] = str(cwd)
    proc = subprocess.run(
        [cli(command), *overrides], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def run_dir(cwd):
    """The single run directory spktrain created under ``cwd/runs``."""
    dirs = glob.glob(os.path.join(str(cwd), "runs", "*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def scalar_values(run):
    """Every scalar the run logged, in step order: tag -> list of values (``train.logs.read_scalars``)."""
    return {tag: [value for _, value in points] for tag, points in read_scalars(run).items()}
