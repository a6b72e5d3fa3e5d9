"""The ``cxr-audit`` command line.

Exit codes: 0 all gating checks pass (or the command succeeded); 1 a gating check failed,
a required check could not run, or ``data validate`` found problems; 2 invalid input or
config; 3 an internal error (a bug: the traceback goes to ``crash.log`` in the run folder);
130 interrupted (Ctrl-C; finished stages are kept).
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from audit.core.config import AuditConfig, PolicyConfig, load_config
from audit.core.errors import AuditError, InputError
from audit.core.progress import configure
from audit.core.tensorflow_output import quiet_tensorflow
from audit.data.cli import app as data_app

if TYPE_CHECKING:
    from audit.core.result import AuditResult

EXIT_CODES = (
    "Exit codes: 0 all gating checks pass; 1 a gating check failed or a required check "
    "could not run; 2 invalid input or config; 3 internal error (a bug); 130 interrupted."
)
INTERNAL_ERROR = 3
INTERRUPTED = 130
CRASH_LOG = "crash.log"

app = typer.Typer(
    name="cxr-audit",
    help="Audit a chest X-ray COVID-19 classifier for shortcut learning.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")

def _remember_run_dir(ctx: typer.Context, value: Path | None) -> Path | None:
    """Check that the command's run folder can be written (before any work), and note it:
    a crash's traceback is written there."""
    if value is None:
        return value
    check_writable_folder(value, "--out")
    root = ctx.find_root()
    if isinstance(root.obj, dict):
        root.obj["run_dir"] = value
    return value


def check_writable_folder(path: Path, option: str) -> None:
    """Raise ``InputError`` unless ``path`` is, or can be created as, a writable folder.

    Nothing is created: the nearest existing folder is probed with a temporary file.
    """
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder; give a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: lies under {existing}, which is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"{option} {path}: cannot write in {existing} "
                         f"({error.strerror})") from None


Out = Annotated[Path, typer.Option("--out", callback=_remember_run_dir,
                                   help="Run folder to create (reports, models, splits, masks).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="Config YAML for the other settings.")]
PolicyOption = Annotated[Path | None, typer.Option(
    "--policy", help="Policy YAML layered on the default policy and the config's policy "
                     "section (e.g. examples/policy-external-model.yaml).")]
Verify = Annotated[bool, typer.Option(
    "--verify", help="Hash every file of each reused cache stage (default: sizes, and hashes "
    "of small or modified files); same as runtime.verify.")]


def _verified(config: AuditConfig, verify: bool) -> AuditConfig:
    """``config`` with ``runtime.verify`` on when ``--verify`` was given."""
    if not verify:
        return config
    return config.model_copy(update={"runtime": config.runtime.model_copy(update={"verify": True})})


@app.callback()
def _global_options(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only warnings and errors.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log lines as JSON.")] = False,
) -> None:
    configure(quiet=quiet, json_logs=log_json)
    # main() passes its own dict as obj, so a crash handler can see the run folder.
    ctx.ensure_object(dict)["log_json"] = log_json  # runtime.quiet re-configures with it


def demo_config_path() -> Path:
    """The packaged demo config, ``examples/demo.yaml``."""
    # A symlink to examples/demo.yaml in a checkout: resolve it so its relative paths
    # (the shared weights folder) are read from the examples folder.
    return Path(str(resources.files("audit") / "defaults" / "demo.yaml")).resolve()


@app.command()
def run(ctx: typer.Context,
        config: Annotated[Path, typer.Argument(help="Run config YAML (see README).")],
        out: Out, policy: PolicyOption = None, verify: Verify = False) -> None:
    """Data -> lung masks -> classifiers on raw and lung-masked inputs -> checks -> verdict.

    0 pass; 1 a gating check failed or a required check could not run; 2 bad input.
    """
    _run_and_exit(_verified(load_config(config), verify), out, ctx.obj["log_json"], policy)


@app.command()
def demo(ctx: typer.Context, out: Out, verify: Verify = False) -> None:
    """The full audit on built-in confounded synthetic phantoms (a few minutes on 2 cores).

    Exits 1: the demo's planted shortcuts fail the gate, as they should.
    """
    _run_and_exit(_verified(load_config(demo_config_path()), verify), out, ctx.obj["log_json"])


@app.command("audit")
def audit_model(
    model: Annotated[Path, typer.Option("--model", help="The trained Keras model (.keras/.h5).")],
    preprocess: Annotated[Path, typer.Option(
        "--preprocess", help="Preprocessing spec YAML of the model (see README).")],
    data: Annotated[Path, typer.Option("--data", help="Manifest CSV/Parquet of the images.")],
    out: Out,
    config: ConfigOption = None,
    policy: PolicyOption = None,
    verify: Verify = False,
    external: Annotated[list[Path] | None, typer.Option(
        "--external", help="Manifest of sources that did not train the model, for "
        "generalization.external (repeatable; added to the config's data.external).")] = None,
) -> None:
    """Audit a model someone else trained: checks that need retraining are not_run.

    The default policy requires them, so the verdict fails whatever the model; judge with
    --policy examples/policy-external-model.yaml, which requires the evidence an external
    model can give instead. 0 pass; 1 a gating check failed or a required check could not
    run; 2 bad input.
    """
    from audit.pipeline import audit_external

    settings = _verified(load_config(config) if config else AuditConfig(), verify)
    settings = settings.model_copy(update={"data": settings.data.model_copy(update={
        "manifest": data.resolve(),
        "external": [*settings.data.external, *(path.resolve() for path in external or [])]})})
    _report_and_exit(audit_external(model, preprocess, settings, out, policy), out)


@app.command()
def gate(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (with summary.json).")],
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Policy YAML layered on the default policy.")] = None,
    policy_from_run: Annotated[bool, typer.Option(
        "--policy-from-run", help="Judge by the policy stored in the run's summary.json.")] = False,
) -> None:
    """Re-judge a finished run against a policy without recomputing; rewrite its reports.

    Judged by the default policy (the checks' defaults, see `cxr-audit checks`), with
    --policy FILE laid on top; the policy stored in summary.json only with
    --policy-from-run. 0 pass; 1 a gating check failed; 2 a bad run folder or policy.
    """
    from audit.gate import judge
    from reports import read_summary, write_reports

    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise InputError(f"{run_dir}: not a finished run folder (expected {summary.name})")
    result = read_summary(summary)
    check_writable_folder(run_dir, "RUN_DIR")  # its reports are rewritten
    ctx.find_root().obj["run_dir"] = run_dir
    chosen, described, name = _gate_policy(policy, policy_from_run, result, summary)
    typer.echo(f"policy: {described}")
    judged = judge(result, chosen, name)
    write_reports(judged, run_dir)
    _report_and_exit(judged, run_dir)


def _gate_policy(policy_file: Path | None, from_run: bool, result: AuditResult,
                 summary: Path) -> tuple[PolicyConfig, str, str]:
    """The policy ``gate`` judges by, a line saying which it is, and its name for the
    report (``audit.gate.policy_name``; the run's own name under ``--policy-from-run``).

    A summary.json can be edited by anyone who can write the run folder, so its embedded
    policy is used only when asked for.
    """
    from audit.core.cache import hash_file
    from audit.gate import load_policy, policy_name, policy_of_run

    if from_run and policy_file is not None:
        raise InputError(f"--policy {policy_file} and --policy-from-run: give one of them "
                         "(a file on the default policy, or the run's own)")
    if from_run:
        name = result.audited.get("policy", {}).get("name", "the run's own")
        return policy_of_run(result, f"{summary} policy"), f"embedded in {summary}", name
    if policy_file is not None:
        chosen = load_policy(policy_file)
        return (chosen, f"{policy_file} (sha256 {hash_file(policy_file)}) on the default",
                policy_name(policy_file))
    return (load_policy(), "default (each check's default rule, see `cxr-audit checks`)",
            policy_name(None))


@app.command()
def train(config: Annotated[Path, typer.Argument(help="Experiment config YAML.")],
          out: Out) -> None:
    """Train the config's classifiers (experiments, no checks); write results.json."""
    from audit.core.cache import StageCache
    from audit.core.io import atomic_write
    from audit.jobs import prepare_data, split_data
    from models.experiments import run_training

    settings = load_config(config)
    out.mkdir(parents=True, exist_ok=True)
    cache = StageCache(settings.runtime.cache_dir or out / "cache", verify=settings.runtime.verify)
    dataset, _ = prepare_data(settings, cache, masks_dir=out / "masks")
    rows = run_training(settings, dataset, split_data(settings, dataset), out, cache)
    with atomic_write(out / "results.json") as handle:
        json.dump(rows, handle, indent=2, default=str)
    typer.echo(f"{len(rows)} trained models; results in {out / 'results.json'}")


@app.command()
def segment(
    manifest: Annotated[Path, typer.Argument(
        help="Manifest CSV/Parquet (its masks are kept, or train the U-Net under "
             "segmentation.source: unet).")],
    out: Out,
    config: ConfigOption = None,
) -> None:
    """Write a lung mask for every image, as segmentation.source says (default auto: the
    manifest's mask where there is one, the shipped segmenter's elsewhere)."""
    from models.segment import segment_manifest

    settings = load_config(config) if config else AuditConfig()
    written = segment_manifest(manifest, out, settings.segmentation)
    typer.echo(f"manifest with masks: {written}")


@app.command()
def init(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV/Parquet of your images.")],
    out: Annotated[Path, typer.Option("--out", help="Config YAML to write.")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter run config for a manifest: labels and how they map, sources, masks."""
    from audit.core.io import atomic_write
    from audit.data.starter import starter_config

    if out.exists() and not force:
        raise InputError(f"{out}: exists; give another --out or --force to overwrite it")
    text = starter_config(manifest)
    with atomic_write(out) as handle:
        handle.write(text)
    typer.echo(f"wrote {out}: edit it (each choice is commented), then "
               f"`cxr-audit run {out} --out DIR`")


@app.command()
def checks(as_json: Annotated[bool, typer.Option(
        "--json", help="Print the check specs as a JSON list.")] = False) -> None:
    """List every check: its question, metric, default gate and what it needs."""
    from dataclasses import asdict

    from probes.base import NEEDS
    from probes.registry import specs

    if as_json:
        typer.echo(json.dumps([asdict(spec) for spec in specs()], indent=2))
        return
    typer.echo("Every metric is oriented the same way: larger means more shortcut.\n")
    for spec in specs():
        rule = spec.default
        needs = "; ".join(f"{need} ({NEEDS[need]})" for need in spec.needs) or "-"
        typer.echo(f"{spec.id}  {spec.title}\n"
                   f"  question:   {spec.question}\n"
                   f"  metric:     {spec.metric}\n"
                   f"  default:    {rule.level} above {rule.threshold:g}, "
                   f"{'required' if rule.required else 'optional'}\n"
                   f"  needs:      {needs}\n"
                   + ("  class:      probes.target_class (COVID by default)\n"
                      if spec.follows_target_class else "")
                   + f"  next steps: {spec.next_steps}\n")


def _run_and_exit(config: AuditConfig, out: Path, log_json: bool,
                  policy: Path | None = None) -> None:
    from audit.pipeline import run_audit

    if config.runtime.quiet:
        configure(quiet=True, json_logs=log_json)
    _report_and_exit(run_audit(config, out, policy_path=policy), out)


def _report_and_exit(result, out: Path) -> None:
    """Print each check once (judged status, id, summary), the stage reuse and the verdict
    with the checks that block it by id, then exit 0 or 1. The reasons in full are in the
    report and ``summary.json``."""
    from audit.gate import exit_code

    typer.echo("checks:")
    for check in result.checks:
        typer.echo(f"  {check.status:<8} {check.check_id}: {check.summary or check.reason or ''}")
    stages = result.provenance.get("stages")
    if stages:
        typer.echo(f"stages: {stages['computed']} computed, {stages['reused']} reused from "
                   f"the cache (finished by an earlier run, or by another job of this one)")
    typer.echo(f"verdict: {result.verdict.upper()}  ({out / 'report.html'})")
    blocking = [check.check_id for check in result.checks if check.blocking]
    if blocking:
        typer.echo(f"  blocking: {', '.join(blocking)}")
    if result.absent_required:
        typer.echo(f"  required but absent from the run: {', '.join(result.absent_required)}")
    raise typer.Exit(exit_code(result))


def main() -> None:
    """Console entry point: every failure becomes a message and a documented exit code."""
    state: dict = {}
    quiet_tensorflow()
    try:
        # Without standalone mode, click returns a raised typer.Exit's code instead.
        code = app(standalone_mode=False, obj=state)
    except AuditError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except typer.TyperException as error:  # usage errors carry their own exit code (2)
        error.show()
        sys.exit(error.exit_code)
    except Exception as error:  # anything else is a bug: say so, keep the traceback
        log_path = _write_crash_log(state.get("run_dir"))
        typer.echo(f"internal error (a bug in cxr-audit, not a problem with your input): "
                   f"{type(error).__name__}: {error}\n  traceback written to {log_path}; "
                   f"please report it with that file", err=True)
        sys.exit(INTERNAL_ERROR)
    if code == INTERRUPTED:  # typer returns Ctrl-C as this code, silently
        typer.echo("interrupted: every finished stage is kept in the cache; run the same "
                   "command again to resume from it", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def _write_crash_log(run_dir: Path | None) -> Path:
    """The current exception's traceback, in the run folder when it can be written there,
    else in the system's temporary folder."""
    text = traceback.format_exc()
    if run_dir is not None:
        try:
            path = Path(run_dir) / CRASH_LOG
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            pass
    handle = tempfile.NamedTemporaryFile("w", prefix="cxr-audit-crash-", suffix=".log",
                                         delete=False)
    with handle:
        handle.write(text)
    return Path(handle.name)


if __name__ == "__main__":
    main()
