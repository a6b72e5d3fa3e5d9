import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from audit.core.cache import (
    CODE_LAYERS,
    MANIFEST_FILE,
    StageCache,
    code_layer,
    hash_array,
    stable_hash,
)
from audit.core.io import atomic_write
from audit.runners import LocalRunner
from tests.runner_jobs import count_and_build


def write_value(value):
    def compute(folder):
        np.save(folder / "value.npy", np.asarray(value))

    return compute


def is_done(cache, stage, inputs):
    """Whether ``stage`` of ``inputs`` is finished, as a compute of this module keys it."""
    return cache.folder(stage, cache.key(stage, inputs, write_value(0))).is_dir()


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


def test_failed_compute_leaves_nothing_that_looks_done(tmp_path):
    cache = StageCache(tmp_path)

    def broken(folder):
        np.save(folder / "half.npy", np.arange(3))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.run("model", {"k": 1}, broken)
    assert not is_done(cache, "model", {"k": 1})
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
    assert not is_done(cache, "model", {"k": 1})
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
    cache = StageCache(tmp_path / "cache")
    folder = cache.folder("model", cache.key("model", {"k": 1}, write_value(0)))
    assert {int(np.load(folder / name)[0]) for name in ("first.npy", "second.npy")} == {2}
    assert [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name] == []


def test_a_reader_never_sees_a_stage_before_all_its_files_are_written(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    writer = subprocess.Popen([sys.executable, "-c", stage_script(
        tmp_path / "cache", 3, started=started, hold=release)])
    wait_for(started, writer)
    cache = StageCache(tmp_path / "cache")
    assert not is_done(cache, "model", {"k": 1})  # first file written, stage not visible
    release.touch()
    assert writer.wait(timeout=300) == 0
    assert is_done(cache, "model", {"k": 1})
    folder = cache.run("model", {"k": 1}, write_value(999))
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_FILE, "first.npy", "second.npy"]
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


def test_a_cache_reads_a_file_once_until_it_changes(tmp_path, monkeypatch):
    """Every cache object on one root (each job of a run, the next run) shares the memo."""
    import hashlib

    path = tmp_path / "weights.h5"
    path.write_bytes(b"first version")
    cache = StageCache(tmp_path / "cache")
    assert cache.hash_file(path, length=64) == hashlib.sha256(b"first version").hexdigest()

    def no_reading(*args, **kwargs):
        raise AssertionError("an unchanged file was read again")

    monkeypatch.setattr("audit.core.cache.open", no_reading, raising=False)
    assert cache.hash_file(path, length=8) == hashlib.sha256(b"first version").hexdigest()[:8]
    another_job = StageCache(tmp_path / "cache")
    assert another_job.hash_file(path, length=64) == hashlib.sha256(b"first version").hexdigest()
    monkeypatch.undo()
    path.write_bytes(b"second, longer version")
    assert cache.hash_file(path, length=64) == hashlib.sha256(b"second, longer version").hexdigest()


def compute_in(module):
    """A stage compute that looks defined in module ``module`` (dotted name)."""
    compute = write_value(0)
    compute.__module__ = module
    return compute


def test_a_stage_key_changes_with_the_code_of_its_layer_and_below_only(tmp_path, monkeypatch):
    sources = tmp_path / "src"
    for folder in ("audit/core", "audit/data", "models", "probes", "reports"):
        (sources / folder).mkdir(parents=True)
        (sources / folder / "code.py").write_text(f"# {folder}\n")
    monkeypatch.setattr("audit.core.cache._SOURCE_ROOT", sources)
    features = compute_in("models.features")

    def key():
        return StageCache(tmp_path / "cache").key("features", {"size": 64}, features)

    first = key()
    assert key() == first  # same code, another cache object
    (sources / "probes" / "code.py").write_text("# a probe changed\n")
    assert key() == first  # a layer above the features' code
    (sources / "audit/core" / "code.py").write_text("# the foundation changed\n")
    after_core = key()
    assert after_core != first
    (sources / "models" / "new_module.py").write_text("x = 1\n")
    assert key() not in (first, after_core)


def test_the_real_sources_give_one_key_per_code_and_inputs(tmp_path):
    first, second = StageCache(tmp_path / "a"), StageCache(tmp_path / "b")
    probe = compute_in("audit.pipeline")
    assert first.key("probe", {"k": 1}, probe) == second.key("probe", {"k": 1}, probe)
    assert first.key("probe", {"k": 1}, probe) != first.key(
        "probe", {"k": 1}, compute_in("audit.data.images"))


def test_code_layers_follow_the_import_contract():
    """Each module the contract names (top layer first) maps to its layer, in order."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (contract,) = [c for c in pyproject["tool"]["importlinter"]["contracts"]
                   if c["type"] == "layers"]
    bottom_first = [[name.strip() for name in layer.split(":")]
                    for layer in reversed(contract["layers"])]
    assert len(bottom_first) == len(CODE_LAYERS)
    assert [{code_layer(name) for name in layer} for layer in bottom_first] == [
        {index} for index in range(len(CODE_LAYERS))]
