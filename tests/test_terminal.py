"""What a user's terminal (or log file) shows: progress bars only on a TTY, plain lines
otherwise; each check once, then the verdict; no TensorFlow start-up or retracing lines;
and the retracing itself avoided (one predict trace per model)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml

from audit import cli
from audit.core import progress
from audit.core.result import AuditResult
from audit.gate import judge, load_policy
from probes.base import CheckResult, Status
from probes.registry import check_ids

ROOT = Path(__file__).resolve().parents[1]
TENSORFLOW_CHATTER = ("oneDNN", "cpu_feature_guard", "This TensorFlow binary", "retracing")


@pytest.fixture
def console():
    """``progress.configure`` for the test (its handler writes to the captured stderr),
    restored afterwards."""
    yield progress.configure
    progress.configure()


def test_progress_off_a_terminal_is_plain_lines_never_carriage_returns(capsys, console,
                                                                       monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_MIN_SECONDS", 0.0)  # a line at every tenth
    console()
    assert list(progress.progress(range(25), "decoding images")) == list(range(25))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "decoding images: 0/25"
    assert re.fullmatch(r"decoding images: 25 done in [\d.]+ s", lines[-1])
    counts = [int(re.fullmatch(r"decoding images: (\d+)/25", line).group(1))
              for line in lines[1:-1]]
    # About one line per tenth: never more than a tenth apart, never past the end.
    assert len(counts) == progress.PLAIN_STEPS - 1
    assert all(0 < step <= 25 // progress.PLAIN_STEPS + 1
               for step in np.diff([0, *counts, 25]))


def test_a_quick_loop_off_a_terminal_is_one_line_at_the_start_and_one_at_the_end(
        capsys, console):
    console()
    list(progress.progress(range(1000), "hashing"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "hashing: 0/1000" and lines[1].startswith("hashing: 1000 done in ")
    assert len(lines) == 2


def test_progress_on_a_terminal_is_a_bar(monkeypatch, console):
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", terminal)
    console()
    list(progress.progress(range(5), "checks"))
    assert "\r" in terminal.getvalue() and "checks: 0/5" not in terminal.getvalue()


@pytest.mark.parametrize("options", [{"quiet": True}, {"json_logs": True}])
def test_no_bar_when_quiet_or_json_even_on_a_terminal(monkeypatch, console, options):
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", terminal)
    console(**options)
    list(progress.progress(range(5), "checks"))
    assert "\r" not in terminal.getvalue()


def _judged_run() -> AuditResult:
    """Every check measured quiet except two that fire and one required check not run."""
    checks = {cid: CheckResult(check_id=cid, title=cid, metric=0.0,
                               summary=f"summary sentence {number}.")
              for number, cid in enumerate(check_ids())}
    checks["data.confounding"] = CheckResult(check_id="data.confounding", title="t",
                                             metric=0.9, summary="Cramér's V 0.90.")
    checks["site.embedding"] = CheckResult(check_id="site.embedding", title="t", metric=0.9,
                                           summary="within-class skill 0.90")
    checks["ablation.class_size"] = CheckResult.not_run("ablation.class_size", "t",
                                                        "needs retraining")
    result = AuditResult(checks=tuple(checks.values()),
                         provenance={"stages": {"computed": 12, "reused": 45, "by_stage": {}}})
    return judge(result, load_policy())


def test_each_check_is_reported_once_then_the_verdict_names_the_blocking_ids(capsys, tmp_path):
    result = _judged_run()
    with pytest.raises(typer.Exit) as stop:
        cli._report_and_exit(result, tmp_path)
    out = capsys.readouterr().out
    assert stop.value.exit_code == 1
    for check in result.checks:
        assert out.count(check.check_id) == 1 + check.blocking, check.check_id
        assert out.count(check.summary or check.reason) == 1, check.check_id
    checks_part, verdict_part = out.split("verdict: FAIL", 1)
    assert re.search(r"^  fail +data\.confounding: Cramér's V 0\.90\.$", checks_part, re.M)
    assert re.search(r"^  warn +site\.embedding: within-class skill 0\.90$", checks_part, re.M)
    assert verdict_part.splitlines()[1:] == [
        "  blocking: data.confounding, ablation.class_size"]
    assert "stages: 12 computed, 45 reused from the cache (finished by an earlier run, " \
           "or by another job of this one)" in checks_part


def test_quiet_tensorflow_hides_the_c_runtime_info_lines():
    """The CLI's one switch: without it TensorFlow prints its CPU-feature line at import
    (and, on AVX-512 machines, oneDNN's line, which no log level hides)."""
    code = ("import sys\n"
            "if sys.argv[1] == 'quiet':\n"
            "    from audit.core.tensorflow_output import quiet_tensorflow\n"
            "    quiet_tensorflow()\n"
            "import tensorflow as tf\n"
            "tf.constant(1.0) + 1\n")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    printed = {mode: subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                                    text=True, check=True, cwd=ROOT, env=env).stderr
               for mode in ("loud", "quiet")}
    assert "cpu_feature_guard" in printed["loud"]  # what there is to hide, on this machine
    assert not any(line in printed["quiet"] for line in TENSORFLOW_CHATTER)


def test_what_the_first_tensorflow_import_writes_is_kept_except_its_info_lines(capfd):
    """Warnings and errors printed while TensorFlow imports reach the user, in order; only
    absl's info lines and its not-initialised notice are dropped."""
    from audit.core.tensorflow_output import _runtime_info_lines_dropped

    written = ("WARNING: All log messages before absl::InitializeLog() is called are written "
               "to STDERR\n"
               "I0000 00:00:1796193026.064704   18529 port.cc:153] oneDNN custom operations\n"
               "W0000 00:00:1796193026.064704   18529 gpu.cc:12] no GPU found\n"
               "E0000 00:00:1796193026.064704   18529 io.cc:7] could not read x\n")
    with _runtime_info_lines_dropped():
        os.write(2, written.encode())
    assert capfd.readouterr().err.splitlines() == written.splitlines()[2:]


def test_full_batches_trace_a_model_once_whatever_the_row_counts():
    keras = pytest.importorskip("keras")
    from models.trained import predict_in_full_batches

    def tiny_model():
        inputs = keras.Input((6,))
        return keras.Model(inputs, keras.layers.Dense(3, name="out")(inputs))

    x = np.random.default_rng(0).normal(size=(11, 6)).astype(np.float32)
    padded, plain = tiny_model(), tiny_model()
    plain.set_weights(padded.get_weights())
    outputs = [predict_in_full_batches(padded, x[:n], batch_size=4) for n in (5, 11, 3)]
    for n in (5, 11, 3):
        plain.predict(x[:n], batch_size=4, verbose=0)
    assert padded.predict_function.experimental_get_tracing_count() == 1
    assert plain.predict_function.experimental_get_tracing_count() > 1  # what padding avoids
    for n, output in zip((5, 11, 3), outputs, strict=True):
        np.testing.assert_allclose(output, plain.predict(x[:n], verbose=0), rtol=1e-6)


def test_embeddings_reuse_one_sub_model():
    pytest.importorskip("keras")
    from tests.attention_fixtures import brightness_trained, lung_phantoms

    model, dataset = brightness_trained(), lung_phantoms(n=5)
    first = model.embed(dataset, np.arange(3))
    embedder = model._part(None, model.embedding_layer)
    np.testing.assert_allclose(model.embed(dataset, np.arange(3)), first)
    assert model._part(None, model.embedding_layer) is embedder
    assert embedder.predict_function.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_a_small_audit_piped_to_a_file_prints_no_control_characters_or_tensorflow_lines(
        tmp_path):
    """``cxr-audit run`` as a user starts it, output to a file: the check lines once, the
    verdict, and none of TensorFlow's start-up or retracing lines nor bar redraws."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        # 96 px: the smallest size whose Grad-CAM grid (3 x 3) the attention checks accept.
        "data": {"synth": {"n_per_class": 4, "n_sources": 2, "image_size": 96},
                 "image_size": 96, "test_fraction": 0.25, "n_folds": 2},
        "segmentation": {"source": "manifest"},
        "models": {"weights": "none", "alpha": 0.35, "epochs": 2, "augmented_views": 0,
                   "training_path": "cached"},
        "probes": {"cam_max_images": 8, "n_permutations": 480, "n_bootstrap": 10,
                   "ablation_sizes": [2, 4], "ablation_seeds": [0]},
    }))
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    log_file = tmp_path / "terminal.log"
    with log_file.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-c", "from audit.cli import main; main()", "run", str(config),
             "--out", str(tmp_path / "run")],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=900)
    printed = log_file.read_text()
    assert done.returncode in (0, 1), printed
    assert "\r" not in printed
    assert [line for line in TENSORFLOW_CHATTER if line in printed] == []
    assert "verdict: " in printed
    check_lines = [line for line in printed.splitlines()
                   if re.match(rf"^  ({'|'.join(status.value for status in Status)}) ", line)]
    assert [line.split()[1].rstrip(":") for line in check_lines] == list(check_ids())
