"""Module-level job functions for the runner tests (jobs must be importable by workers)."""

import os

import numpy as np


def seeded_draw(payload):
    rng = np.random.default_rng(payload["seed"])
    return {"seed": payload["seed"], "value": float(rng.normal()), "pid": os.getpid()}


def fail_on_odd(payload):
    if payload["seed"] % 2:
        raise ValueError(f"odd seed {payload['seed']}")
    return payload["seed"]


def count_and_build(payload):
    """Compute one shared stage, counting real computations in a log file."""
    from pathlib import Path

    from audit.core.cache import StageCache

    def compute(folder):
        with open(payload["log"], "a") as log:
            log.write(f"{os.getpid()}\n")
        np.save(folder / "value.npy", np.arange(payload["n"]))

    folder = StageCache(payload["root"]).run("shared", {"n": payload["n"]}, compute)
    return int(np.load(Path(folder) / "value.npy").sum())


def die_on_odd(payload):
    """Kill the worker process itself on odd seeds (as the OOM killer or a SIGKILL would)."""
    import signal

    if payload["seed"] % 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return payload["seed"]


def bad_input_on_odd(payload):
    """Bad input found inside a job (as a missing weights file is)."""
    from audit.core.errors import InputError

    if payload["seed"] % 2:
        raise InputError(f"weights-{payload['seed']}.h5: no such weights file")
    return payload["seed"]


def thread_settings(payload):
    """The thread limits this worker runs with: TensorFlow's pools and the BLAS pools."""
    import tensorflow as tf
    from threadpoolctl import threadpool_info

    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "blas": sorted({pool["num_threads"] for pool in threadpool_info()})}
