"""Fault injection through the command line (issue 15's table): each broken input exits
with its documented code and a message naming what is wrong, never with a traceback.

Each row builds its fault in ``tmp_path`` and returns the ``cxr-audit`` arguments; the
command runs in-process through ``audit.cli.main``. Every row fails before any expensive
work (training, features), so the table stays cheap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from audit.core.result import AuditResult
from audit.gate import judge, load_policy
from probes.base import CheckResult
from probes.registry import check_ids
from tests.test_cli import run_cli

INVALID = 2  # invalid input, config, policy, spec or run folder
PROBLEMS = 1  # a gating check failed, or ``data validate`` found problems


def _config(text: str, encoding: str = "utf-8") -> Callable[[Path], list[str]]:
    """A row running ``run CONFIG --out DIR`` on a config of ``text``."""
    def build(tmp_path: Path) -> list[str]:
        path = tmp_path / "config.yaml"
        path.write_bytes(text.encode(encoding))
        return ["run", str(path), "--out", str(tmp_path / "out")]
    return build


def _out_is_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "taken").write_text("a file")
    return ["demo", "--out", str(tmp_path / "taken")]


def _out_under_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "taken").write_text("a file")
    return ["demo", "--out", str(tmp_path / "taken" / "run")]


def _judged_run(tmp_path: Path) -> Path:
    """A run folder with a valid, judged summary.json (every check quiet)."""
    checks = tuple(CheckResult(check_id=cid, title=cid, metric=0.0) for cid in check_ids())
    judge(AuditResult(checks=checks), load_policy()).save_json(tmp_path / "summary.json")
    return tmp_path


def _summary(edit: Callable[[dict], object]) -> Callable[[Path], list[str]]:
    """A row running ``gate DIR`` on a judged summary.json changed by ``edit`` (which
    returns the new content: a dict is written as JSON, a string as it is)."""
    def build(tmp_path: Path) -> list[str]:
        path = _judged_run(tmp_path) / "summary.json"
        content = edit(json.loads(path.read_text()))
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return ["gate", str(tmp_path)]
    return build


def _set_first_check(**fields) -> Callable[[dict], dict]:
    def edit(data: dict) -> dict:
        data["checks"][0].update(fields)
        return data
    return edit


def _read_only_run(tmp_path: Path) -> list[str]:
    run = _judged_run(tmp_path / "run")
    _make_read_only(run)
    return ["gate", str(run)]


def _make_read_only(folder: Path) -> None:
    """Make ``folder`` unwritable even for root (chmod, then the immutable flag), or skip."""
    folder.chmod(0o555)
    if _writable(folder) and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if _writable(folder):
        pytest.skip(f"cannot make {folder} read-only here")


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture(autouse=True)
def _writable_again(tmp_path):
    """Undo ``_make_read_only`` so pytest can remove ``tmp_path``."""
    yield
    for folder in [tmp_path, *tmp_path.rglob("*")]:
        if folder.is_dir():
            if shutil.which("chattr"):
                subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
            folder.chmod(0o755)


def _gate_with(*options: str, policy: bytes | None = None) -> Callable[[Path], list[str]]:
    """A row running ``gate DIR OPTIONS`` on a valid run; ``policy`` is written as
    ``policy.yaml`` and given as ``--policy``."""
    def build(tmp_path: Path) -> list[str]:
        run = _judged_run(tmp_path / "run")
        given = []
        if policy is not None:
            (tmp_path / "policy.yaml").write_bytes(policy)
            given = ["--policy", str(tmp_path / "policy.yaml")]
        return ["gate", str(run), *given, *options]
    return build


SPEC = "input_size: 32\nscaling: \"0-1\"\nclasses: [normal, covid, opacity, other]\n"


def _external(spec: bytes) -> Callable[[Path], list[str]]:
    """A row running ``audit --model --preprocess --data`` with a 32x32 RGB model."""
    def build(tmp_path: Path) -> list[str]:
        keras = pytest.importorskip("keras")
        inputs = keras.Input((32, 32, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
        keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(pooled)).save(
            tmp_path / "user.keras")
        (tmp_path / "spec.yaml").write_bytes(spec)
        (tmp_path / "manifest.csv").write_text("path,label,source\n")
        return ["audit", "--model", str(tmp_path / "user.keras"), "--preprocess",
                str(tmp_path / "spec.yaml"), "--data", str(tmp_path / "manifest.csv"),
                "--out", str(tmp_path / "out")]
    return build


def _header_only_manifest(tmp_path: Path) -> list[str]:
    (tmp_path / "manifest.csv").write_text("path,label,source\n")
    return ["data", "validate", str(tmp_path / "manifest.csv")]


ROWS = {
    "config typo": (_config("models:\n  backbone: [mobilenet]\n"), INVALID, "models.backbone"),
    "no backbones": (_config("models:\n  backbones: []\n"), INVALID, "models.backbones"),
    "input modes without raw": (_config("models:\n  input_modes: [lung_masked]\n"), INVALID,
                                "input_modes must include 'raw'"),
    "image size too small for the CAM grid": (
        _config("data:\n  image_size: 64\n"), INVALID,
        "data.image_size: 64 gives mobilenetv2 a 2x2-cell Grad-CAM"),
    "infinite threshold": (_config("policy:\n  checks:\n    site.image: {threshold: .inf}\n"),
                           INVALID, "threshold"),
    "boolean epochs": (_config("models:\n  epochs: true\n"), INVALID, "models.epochs"),
    "config not UTF-8": (_config("data:\n  label_map: {sané: covid}\n", "latin-1"), INVALID,
                         "config.yaml: a config file must be UTF-8 text; byte 23 is not"),
    "--out an existing file": (_out_is_a_file, INVALID, "exists and is not a folder"),
    "--out under a file": (_out_under_a_file, INVALID, "which is a file, not a folder"),
    "gate on {}": (_summary(lambda data: {}), INVALID,
                   "summary.json: does not match the summary schema: $: "),
    "gate on not JSON": (_summary(lambda data: "{not json"), INVALID,
                         "summary.json: not valid JSON (line 1, column 2"),
    "gate on a text metric": (_summary(_set_first_check(metric="high")), INVALID,
                              "$.checks[0].metric: 'high' is not of type"),
    "gate on a bogus status": (_summary(_set_first_check(status="bogus")), INVALID,
                               "$.checks[0].status: 'bogus' is not one of"),
    "gate on a read-only run": (_read_only_run, INVALID, "run: cannot write in"),
    "gate policy not UTF-8": (_gate_with(policy="alpha: 0.05 # \u00e9\n".encode("latin-1")),
                              INVALID, "policy.yaml: a policy file must be UTF-8 text; byte 14"),
    "gate with two policies": (_gate_with("--policy-from-run", policy=b"alpha: 0.01\n"),
                               INVALID, "and --policy-from-run: give one of them"),
    "spec channels not the model's": (_external(SPEC.encode() + b"channels: 1\n"), INVALID,
                                      "spec.yaml: channels: 1, but the model"),
    "spec not UTF-8": (_external(SPEC.encode() + "backbone: réseau\n".encode("latin-1")),
                       INVALID, "spec.yaml: a model spec must be UTF-8 text; byte"),
    "header-only manifest in data validate": (_header_only_manifest, PROBLEMS,
                                              "no data rows: the manifest has a header only"),
}


@pytest.mark.parametrize("row", ROWS, ids=list(ROWS))
def test_a_fault_exits_with_its_code_and_names_the_problem(monkeypatch, capsys, tmp_path, row):
    build, expected_code, fragment = ROWS[row]
    code, out, err = run_cli(monkeypatch, capsys, *build(tmp_path))
    assert "Traceback" not in out + err
    assert (code, fragment in out + err) == (expected_code, True), out + err


def test_an_embedded_policy_that_ignores_everything_is_not_used_unless_asked(
        monkeypatch, capsys, tmp_path):
    """An edited summary.json cannot turn a failing run into a passing one."""
    checks = tuple(CheckResult(check_id=cid, title=cid, metric=1.0) for cid in check_ids())
    judged = judge(AuditResult(checks=checks), load_policy())
    assert judged.verdict == "fail"
    edited = judged.to_dict()
    for rule in edited["policy"]["checks"].values():
        rule["gate"] = "ignore"
    summary = tmp_path / "summary.json"

    summary.write_text(json.dumps(edited))
    code, out, _ = run_cli(monkeypatch, capsys, "gate", str(tmp_path))
    assert (code, "verdict: FAIL" in out) == (PROBLEMS, True)
    assert "policy: default" in out
    summary.write_text(json.dumps(edited))  # gate rewrote it, judged by the default policy
    code, out, _ = run_cli(monkeypatch, capsys, "gate", str(tmp_path), "--policy-from-run")
    assert (code, "verdict: PASS" in out) == (0, True)
    assert f"policy: embedded in {summary}" in out
