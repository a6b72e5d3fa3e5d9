"""Execution backends for the audit's grid of independent jobs.

A job is a module-level function taking one small JSON-able ``payload`` dict and returning
small metadata; big arrays travel through the stage cache on disk, never through the
runner. Because every job writes its output as a cache stage, the jobs that finished
before a failure (or a kill) are reused by the next run.

Backends (``runtime.backend`` in the config):

- ``local``: in this process when ``workers == 1`` (the default), else a pool of
  ``workers`` processes started with ``spawn`` (TensorFlow is not fork-safe). Each pool
  process gets ``cores // workers`` threads (``worker_threads``, at least 1) for
  TensorFlow's intra- and inter-op pools and for BLAS/OpenMP (``limit_threads``): left
  alone, every process would start one thread per core in each pool, ``workers`` times
  more runnable threads than cores.
- ``ray``: one Ray task per job with declared CPU/GPU needs, on a local Ray instance or on
  an existing cluster (``runtime.ray_address``).

All backends return results in payload order. When jobs fail, every other job still runs
to completion (their stages are kept, so a rerun reuses them) and the first failure in
payload order is raised as ``JobError`` naming its payload. A job whose process dies
(killed, out of memory) is a failure too: in a local pool it takes the pool down, so the
jobs not yet finished fail with it; Ray retries a task whose worker died (its default
``max_retries``; jobs are safe to rerun, as they write through the stage cache) before
reporting it. On a cluster, the job functions (``audit.jobs``) must be importable on every
node and the cache folder shared by all of them.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from audit.core.config import RuntimeConfig
from audit.core.errors import AuditError
from audit.core.progress import log
from audit.core.tensorflow_output import quiet_tensorflow

Job = Callable[[dict[str, Any]], Any]


class JobError(RuntimeError):
    """A grid job failed; ``payload`` says which one (its message leaves out the run's
    whole config, which every payload carries)."""

    def __init__(self, payload: dict[str, Any], cause: BaseException):
        job = {key: value for key, value in payload.items() if key != "config"}
        super().__init__(f"job {job!r} failed: {type(cause).__name__}: {cause}")
        self.payload = payload


class Runner(Protocol):
    """Runs ``func(payload)`` for every payload; results in payload order."""

    name: str

    def map(self, func: Job, payloads: list[dict[str, Any]]) -> list[Any]: ...


def _collect(payloads: list[dict[str, Any]], outcomes: list[tuple[bool, Any]]) -> list[Any]:
    for payload, (ok, value) in zip(payloads, outcomes, strict=True):
        if not ok and isinstance(value, AuditError):  # bad input found in a job is bad input
            raise value
        if not ok:
            raise JobError(payload, value) from value
    return [value for _, value in outcomes]


class LocalRunner:
    """Runs jobs in this process, or in ``workers`` spawned processes.

    Args:
        workers: 1 runs the jobs one after the other in this process; more starts a pool
            of that many processes with the ``spawn`` method. Defaults to 1.
    """

    name = "local"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers

    def map(self, func: Job, payloads: list[dict[str, Any]]) -> list[Any]:
        if self.workers == 1 or len(payloads) <= 1:
            outcomes = [_attempt(func, payload) for payload in payloads]
        else:
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                       initializer=start_worker,
                                       initargs=(worker_threads(self.workers),))
            try:
                futures = [pool.submit(func, payload) for payload in payloads]
                outcomes = [_outcome(future) for future in futures]
            finally:  # on Ctrl-C, drop the queued jobs instead of waiting for all of them
                pool.shutdown(wait=True, cancel_futures=True)
        return _collect(payloads, outcomes)


def worker_threads(workers: int) -> int:
    """Threads per process when ``workers`` processes share this machine's cores: the
    cores this process may run on, divided among them (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


_BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def start_worker(threads: int) -> None:
    """A spawned pool process's initializer: it starts clean, so TensorFlow's start-up
    lines are kept off its stderr too, and its thread pools are capped (``limit_threads``)."""
    quiet_tensorflow()
    limit_threads(threads)


def limit_threads(threads: int) -> None:
    """Cap this process at ``threads`` threads per pool: TensorFlow's intra-op pool (one
    op's arithmetic) and inter-op pool (ops run side by side), and the BLAS/OpenMP pools of
    numpy, scipy and scikit-learn (those already loaded through threadpoolctl, those loaded
    later through their environment variables).

    A pool process's initializer: it runs before any job, so before TensorFlow starts
    (TensorFlow refuses the setting once it runs).
    """
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    for variable in _BLAS_THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    threadpool_limits(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_with_threads(func: Job, threads: int, payload: dict[str, Any]) -> Any:
    """``func(payload)`` in a Ray worker whose pools are capped at the CPUs its task
    declared (``limit_threads``): Ray counts a task's CPUs for scheduling but leaves
    TensorFlow's pools at one thread per core, so two tasks on two cores would run four
    threads. A Ray worker process runs task after task: the first sets the caps (TensorFlow
    refuses them once it runs) and the later ones find them set."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            limit_threads(threads)
        except RuntimeError as error:  # a worker whose TensorFlow started under other caps
            log.warning("Ray worker %d keeps its thread pools (%s)", os.getpid(), error)
    return func(payload)


def _attempt(func: Job, payload: dict[str, Any]) -> tuple[bool, Any]:
    try:
        return True, func(payload)
    except Exception as error:  # reported with its payload once all jobs have run
        return False, error


def _outcome(future: Any) -> tuple[bool, Any]:
    try:
        return True, future.result()
    except Exception as error:
        return False, error


class RayRunner:
    """Runs each job as a Ray task (local instance, or the cluster at ``address``).

    Ray is imported and started (``ray.init``) on the first ``map``, unless it is already
    running in this process, in which case that instance is used.

    Args:
        address: an existing Ray cluster; None starts a local instance. Defaults to None.
        num_cpus: CPUs of the local instance; None lets Ray count them. Defaults to None.
        cpus_per_job: CPUs each task declares. Defaults to 1.
        gpus_per_job: GPUs each task declares. Defaults to 0.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 cpus_per_job: float = 1, gpus_per_job: float = 0):
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job

    def _ensure_started(self) -> Any:
        import ray  # optional dependency: only needed for this backend

        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                options["address"] = self.address
            else:
                options["num_cpus"] = self.num_cpus
            ray.init(**options)
        return ray

    def map(self, func: Job, payloads: list[dict[str, Any]]) -> list[Any]:
        ray = self._ensure_started()
        task = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job)(
            run_with_threads)
        threads = max(1, int(self.cpus_per_job))
        refs = [task.remote(func, threads, payload) for payload in payloads]
        outcomes = []
        for ref in refs:
            try:
                outcomes.append((True, ray.get(ref)))
            except ray.exceptions.RayTaskError as error:  # the job raised
                # Bad input is passed on as the job raised it: Ray's wrapper would put the
                # worker's traceback into the message the user reads.
                cause = error.cause
                outcomes.append((False, cause if isinstance(cause, AuditError)
                                 else error.as_instanceof_cause()))
            except ray.exceptions.RayError as error:  # its worker died, even after retries
                outcomes.append((False, error))
        return _collect(payloads, outcomes)


def get_runner(runtime: RuntimeConfig) -> Runner:
    """The backend the config asks for."""
    if runtime.backend == "ray":
        # ``workers`` sizes a local Ray instance; a cluster brings its own CPUs.
        num_cpus = None if runtime.ray_address else runtime.workers
        return RayRunner(address=runtime.ray_address, num_cpus=num_cpus)
    return LocalRunner(workers=runtime.workers)
