"""How many shards sample at once in this process, and how many torch threads each gets.

The rule (measured in bench/bench_threads.py, docs/benchmarks.md "Threads"): the cores this
process may run on are split evenly between the shards that sample concurrently, never below one
thread per shard and never above the cores, so the machine is used but not oversubscribed:

    threads = sampling.threads  if set,  else  max(1, cores // workers)
    workers = min(sampling.workers, shards)

`cores` is the process's CPU affinity (what a container, taskset or a Slurm allocation grants),
not the host's count. torch's thread count is one value per process, shared by every shard
thread, so concurrent shards in one process use the same number.

On a Dask worker the cluster owns the split: a worker process runs as many shards as its
`--nthreads`, and Dask's nanny starts each worker with OMP_NUM_THREADS=1 unless told otherwise;
certseg leaves torch's count as the worker was started (unless sampling.threads is set); each
shard task logs the count it ran with. Nothing here reads an environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Parallelism:
    """Concurrent shards in this process (workers ≥ 1) and torch threads per process (≥ 1).

    rule: how `threads` was chosen — "config" (sampling.threads), "cores//workers" (the rule
    above, with `cores` the affinity count) — recorded in the run's MLflow params.
    """

    workers: int
    threads: int
    cores: int
    rule: str

    def params(self) -> dict[str, str]:
        """The resolved values as MLflow params (`resolved.sampling.*`)."""
        return {
            "resolved.sampling.workers": str(self.workers),
            "resolved.sampling.threads": str(self.threads),
            "resolved.sampling.cores": str(self.cores),
            "resolved.sampling.threads_rule": self.rule,
        }


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), ≥ 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_parallelism(
    *, workers: int, threads: int | None, shards: int, cores: int | None = None
) -> Parallelism:
    """Apply the rule of this module's docstring.

    workers: sampling.workers (≥ 1), capped at the number of shards (a worker with no shard
    would only hold threads back). threads: sampling.threads, or None for the rule. cores: the
    affinity count (`available_cores()` when None). Raises ValueError when workers exceed the
    cores on a CPU-only count, naming the field: concurrent shards beyond the cores only fight
    over them.
    """
    if workers < 1 or shards < 1:
        raise ValueError(f"sampling.workers and shards must be >= 1, got {workers} and {shards}")
    cores = available_cores() if cores is None else cores
    effective = min(workers, shards)
    if threads is not None:
        return Parallelism(effective, threads, cores, "config")
    if effective > cores:
        raise ValueError(
            f"sampling.workers: {workers} concurrent shards on {cores} cores would oversubscribe "
            f"the CPU; use at most {cores} (or set sampling.threads to choose yourself)"
        )
    return Parallelism(effective, max(1, cores // effective), cores, "cores//workers")


def on_dask_worker() -> bool:
    """Whether this code runs inside a Dask worker (a shard submitted by DaskTaskRunner)."""
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def torch_threads() -> int:
    """torch's intra-op thread count in this process (what sampling here runs with)."""
    import torch

    return int(torch.get_num_threads())
