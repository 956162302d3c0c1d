"""Where ``spkspectra simulate`` runs its molecules: Dask distributed clusters.

Three kinds, all driven the same way by :func:`schnetpack_molspectra.data.simulate.runner.simulate_to_db`
(the client process submits one task per molecule and is the only writer of the database):

  local       a ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes
  scheduler   a running cluster, by its address (``tcp://host:8786``) or scheduler file (JSON)
  slurm, pbs, sge, lsf, oar, moab
              a ``dask-jobqueue`` cluster: ``jobs`` batch jobs of ``cores`` single-threaded worker
              processes each; the scheduler runs in this process, so the compute nodes must reach it,
              and they start workers with this Python (``sys.executable``; a shared file system, or
              ``--job-prologue`` to activate an environment that has this package)

Every worker runs one molecule at a time with one OpenMP thread (xTB and PySCF), so a job's
``cores`` is also its number of worker processes. Workers import this package before torch (the
task's module does), so tblite loads there (``data/tblite_process.py``). Options left unset
for a batch system fall back to Dask's jobqueue configuration (``~/.config/dask/jobqueue.yaml``).
"""

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

__all__ = ["ClusterSpec", "ClusterError", "JOBQUEUE_CLUSTERS", "make_cluster", "dask_client"]

#: batch systems of dask-jobqueue: name -> (cluster class, keyword of the account/project option)
JOBQUEUE_CLUSTERS = {
    "slurm": ("SLURMCluster", "account"),
    "pbs": ("PBSCluster", "account"),
    "moab": ("MoabCluster", "account"),
    "sge": ("SGECluster", "project"),
    "lsf": ("LSFCluster", "project"),
    "oar": ("OARCluster", "project"),
}

#: memory of a batch job when neither the option nor the jobqueue configuration sets it (per core)
DEFAULT_MEMORY_PER_CORE_GB = 2


class ClusterError(RuntimeError):
    """A Dask cluster that cannot be used (package missing, scheduler unreachable); the message says why."""


@dataclass
class ClusterSpec:
    """A Dask cluster to run the simulations on (``kind``: ``local``, ``scheduler`` or a batch system)."""

    kind: str = "local"
    workers: int = 2  # local: worker processes, one thread each
    address: str = ""  # scheduler: tcp://host:8786, or the scheduler file (JSON) of a running cluster
    jobs: int = 1  # batch: jobs to submit
    cores: Optional[int] = None  # batch: cores per job = worker processes per job (default: config, else 1)
    memory: Optional[str] = None  # batch: memory per job, e.g. "16GB" (default: config, else 2 GB per core)
    walltime: Optional[str] = None  # batch: e.g. "02:00:00"
    queue: Optional[str] = None  # batch: queue / partition
    account: Optional[str] = None  # batch: account (project on SGE, LSF, OAR)
    job_extra: List[str] = field(default_factory=list)  # batch: extra scheduler directives, e.g. "--constraint=cpu"
    job_prologue: List[str] = field(
        default_factory=list
    )  # batch: shell lines run before the worker, e.g. "source venv/bin/activate"
    interface: Optional[str] = None  # batch: network interface of scheduler and workers, e.g. "ib0"
    local_directory: Optional[str] = None  # workers' scratch space (default: Dask's)

    def __post_init__(self):
        kinds = ["local", "scheduler", *JOBQUEUE_CLUSTERS]
        if self.kind not in kinds:
            raise ValueError(f"unknown Dask cluster kind {self.kind!r}; choose from {kinds}")
        if self.kind == "local" and self.workers < 1:
            raise ValueError(f"a local Dask cluster needs at least 1 worker, not {self.workers}")
        if self.kind == "scheduler" and not self.address:
            raise ValueError("a Dask scheduler needs its address (tcp://host:8786) or scheduler file")
        if self.kind in JOBQUEUE_CLUSTERS and (self.jobs < 1 or (self.cores is not None and self.cores < 1)):
            raise ValueError(
                f"{self.kind} needs at least 1 job of at least 1 core (jobs={self.jobs}, cores={self.cores})"
            )


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ClusterError(
            f"parallel simulation runs on Dask distributed, which is not installed ({err}); "
            "pip install 'dask[distributed]', or run serially with --workers 1"
        ) from None
    return distributed


def make_cluster(spec: ClusterSpec):
    """The (not yet scaled) cluster object of a ``local`` or batch-system ``spec``: a
    ``distributed.LocalCluster`` with ``spec.workers`` worker processes, or a dask-jobqueue
    cluster whose jobs run ``cores`` single-threaded workers (no job is submitted here)."""
    distributed = _import_distributed()
    if spec.kind == "local":
        import dask  # dask (slow to import): only when a cluster is made, as distributed above

        # worker processes log warnings and errors only: spawned workers import this package (and
        # SchNetPack, whose root logger prints INFO) before distributed sets up its own logging
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}), DASK_LOGGING__DISTRIBUTED="warning")
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return distributed.LocalCluster(
                n_workers=spec.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                local_directory=spec.local_directory,
                env={"OMP_NUM_THREADS": "1"},  # one OpenMP thread per worker (xTB, PySCF)
            )
    if spec.kind not in JOBQUEUE_CLUSTERS:
        raise ValueError(f"make_cluster builds local and batch clusters, not {spec.kind!r}")
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"--jobqueue {spec.kind} needs dask-jobqueue, which is not installed: "
            "pip install dask-jobqueue (or the package's extra: pip install 'schnetpack-molspectra[cluster]')"
        ) from None
    import dask  # dask (slow to import): only when a cluster is made

    class_name, account_keyword = JOBQUEUE_CLUSTERS[spec.kind]
    config = f"jobqueue.{spec.kind}"
    cores = spec.cores or dask.config.get(f"{config}.cores", None) or 1
    memory = spec.memory or dask.config.get(f"{config}.memory", None) or f"{DEFAULT_MEMORY_PER_CORE_GB * cores}GB"
    options = dict(
        cores=cores,
        processes=cores,  # single-threaded workers
        memory=memory,
        job_script_prologue=["export OMP_NUM_THREADS=1", *spec.job_prologue],
    )
    optional = {
        "walltime": spec.walltime,
        "queue": spec.queue,
        account_keyword: spec.account,
        "interface": spec.interface,
        "local_directory": spec.local_directory,
        "job_extra_directives": spec.job_extra or None,
    }
    options.update({k: v for k, v in optional.items() if v is not None})
    return getattr(dask_jobqueue, class_name)(**options)


@contextmanager
def dask_client(spec: ClusterSpec) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client`` on the cluster of ``spec``; a cluster started here (local or
    batch jobs) is shut down on exit, a running scheduler (``kind="scheduler"``) is left running."""
    distributed = _import_distributed()
    with _quiet_distributed_logs():
        yield from _client(distributed, spec)


@contextmanager
def _quiet_distributed_logs(level: int = logging.WARNING):
    """distributed's logs in this process at ``level`` and above (SchNetPack's root logger prints INFO)."""
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _client(distributed, spec: ClusterSpec):
    if spec.kind == "scheduler":
        is_file = spec.address.endswith(".json") or os.path.isfile(spec.address)
        try:
            if is_file:
                client = distributed.Client(scheduler_file=spec.address)
            else:
                client = distributed.Client(spec.address)
        except (OSError, TimeoutError, ValueError) as err:
            what = "scheduler file" if is_file else "address"
            raise ClusterError(f"cannot connect to the Dask scheduler at {what} {spec.address}: {err}") from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = make_cluster(spec)
    try:
        if spec.kind in JOBQUEUE_CLUSTERS:
            cluster.scale(jobs=spec.jobs)
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
