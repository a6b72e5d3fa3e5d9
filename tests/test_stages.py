import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from audit.runners import LocalRunner
from audit.stages import StageCache, atomic_write, hash_array, stable_hash
from tests.runner_jobs import count_and_build


def write_value(value):
    def compute(folder):
        np.save(folder / "value.npy", np.asarray(value))

    return compute


def test_stable_hash_ignores_dict_order_but_not_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert hash_array(np.zeros(3, np.uint8)) != hash_array(np.zeros(3, np.int16))


def test_second_run_reuses_and_a_changed_input_recomputes(tmp_path):
    cache = StageCache(tmp_path)
    first = cache.run("features", {"size": 64}, write_value(1))
    again = cache.run("features", {"size": 64}, write_value(999))
    other = cache.run("features", {"size": 96}, write_value(2))
    assert first == again and first != other
    assert int(np.load(again / "value.npy")) == 1
    assert [e.action for e in cache.events] == ["computed", "reused", "computed"]
    assert cache.summary() == {"reused": 1, "computed": 2}


def test_failed_compute_leaves_nothing_that_looks_done(tmp_path):
    cache = StageCache(tmp_path)

    def broken(folder):
        np.save(folder / "half.npy", np.arange(3))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.run("model", {"k": 1}, broken)
    assert not cache.is_done("model", {"k": 1})
    assert [p.name for p in (tmp_path / "model").iterdir() if not p.name.endswith(".lock")] == []


def test_killed_writer_leaves_only_a_temp_folder_that_is_cleaned(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from audit.stages import StageCache
        def compute(folder):
            np.save(folder / "part.npy", np.arange(10))
            os.kill(os.getpid(), signal.SIGKILL)
        StageCache({str(tmp_path)!r}).run("model", {{"k": 1}}, compute)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -signal.SIGKILL
    stage_dir = tmp_path / "model"
    assert any(p.name.startswith(".") and ".tmp-" in p.name for p in stage_dir.iterdir())
    cache = StageCache(tmp_path)
    assert not cache.is_done("model", {"k": 1})
    folder = cache.run("model", {"k": 1}, write_value(7))
    assert int(np.load(folder / "value.npy")) == 7
    assert not any(".tmp-" in p.name for p in stage_dir.iterdir())


def test_concurrent_processes_compute_a_shared_stage_once(tmp_path):
    log = tmp_path / "computed.log"
    payloads = [{"root": str(tmp_path / "cache"), "n": 1000, "log": str(log)} for _ in range(4)]
    sums = LocalRunner(workers=2).map(count_and_build, payloads)
    assert sums == [sum(range(1000))] * 4
    assert len(log.read_text().splitlines()) == 1


def test_atomic_write_keeps_old_content_when_the_writer_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("new, but incomplete")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]
