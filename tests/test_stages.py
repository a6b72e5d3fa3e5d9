import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from audit.core.cache import StageCache, hash_array, hash_file, stable_hash
from audit.core.io import atomic_write
from audit.runners import LocalRunner
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
        from audit.core.cache import StageCache
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


def stage_script(root, value, started=None, hold=None):
    """A Python program computing stage ("model", {"k": 1}) with ``value``. With
    ``started``, it first creates that file; with ``hold``, it then waits for that file."""
    return textwrap.dedent(f"""
        import time
        from pathlib import Path
        import numpy as np
        from audit.core.cache import StageCache
        def compute(folder):
            np.save(folder / "first.npy", np.full(1000, {value}))
            if {str(started)!r} != "None":
                Path({str(started)!r}).touch()
            while {str(hold)!r} != "None" and not Path({str(hold)!r}).exists():
                time.sleep(0.05)
            np.save(folder / "second.npy", np.full(1000, {value}))
        StageCache({str(root)!r}).run("model", {{"k": 1}}, compute)
    """)


def wait_for(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the writer ended before it started computing"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_waiter_takes_over_when_the_lock_holder_is_killed(tmp_path):
    """The lock dies with its holder: a run waiting on the same stage then computes it,
    clears the dead writer's temporary folder and never reads its half-written files."""
    started = tmp_path / "started"
    holder = subprocess.Popen([sys.executable, "-c", stage_script(
        tmp_path / "cache", 1, started=started, hold=tmp_path / "never")])
    wait_for(started, holder)
    waiter = subprocess.Popen([sys.executable, "-c", stage_script(tmp_path / "cache", 2)])
    holder.kill()
    assert holder.wait() == -signal.SIGKILL
    assert waiter.wait(timeout=300) == 0
    folder = StageCache(tmp_path / "cache").folder("model", StageCache(tmp_path).key(
        "model", {"k": 1}))
    assert {int(np.load(folder / name)[0]) for name in ("first.npy", "second.npy")} == {2}
    assert [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name] == []


def test_a_reader_never_sees_a_stage_before_all_its_files_are_written(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    writer = subprocess.Popen([sys.executable, "-c", stage_script(
        tmp_path / "cache", 3, started=started, hold=release)])
    wait_for(started, writer)
    cache = StageCache(tmp_path / "cache")
    assert not cache.is_done("model", {"k": 1})  # first file written, stage not visible
    release.touch()
    assert writer.wait(timeout=300) == 0
    assert cache.is_done("model", {"k": 1})
    folder = cache.run("model", {"k": 1}, write_value(999))
    assert sorted(p.name for p in folder.iterdir()) == ["first.npy", "second.npy"]
    assert cache.events[-1].action == "reused"


def test_locks_are_per_stage_so_different_stages_compute_in_parallel(tmp_path):
    """A process holding one stage's lock does not block another stage: the holder only
    finishes once a second process has computed a different stage in the same cache."""
    started, other_done = tmp_path / "started", tmp_path / "other_done"
    holder = subprocess.Popen([sys.executable, "-c", stage_script(
        tmp_path / "cache", 4, started=started, hold=other_done)])
    wait_for(started, holder)
    folder = StageCache(tmp_path / "cache").run("model", {"k": 2}, write_value(5))
    other_done.touch()
    assert holder.wait(timeout=300) == 0
    assert int(np.load(folder / "value.npy")) == 5


def test_atomic_write_from_concurrent_threads_never_tears_the_file(tmp_path):
    target = tmp_path / "summary.json"

    def write(text):
        for _ in range(50):
            with atomic_write(target) as handle:
                handle.write(text)

    texts = [str(i) * 20_000 for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, texts))
    assert target.read_text() in texts
    assert os.listdir(tmp_path) == ["summary.json"]


def test_hash_file_reads_a_file_once_until_it_changes(tmp_path, monkeypatch):
    import hashlib

    path = tmp_path / "weights.h5"
    path.write_bytes(b"first version")
    assert hash_file(path, length=64) == hashlib.sha256(b"first version").hexdigest()

    def no_reading(*args, **kwargs):
        raise AssertionError("an unchanged file was read again")

    monkeypatch.setattr("audit.core.cache.open", no_reading, raising=False)
    assert hash_file(path, length=8) == hashlib.sha256(b"first version").hexdigest()[:8]
    monkeypatch.undo()
    path.write_bytes(b"second, longer version")
    assert hash_file(path, length=64) == hashlib.sha256(b"second, longer version").hexdigest()
