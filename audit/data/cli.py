"""``cxr-audit data ...``: import, validate and synthesise datasets.

Mounted by ``audit.cli`` as ``app.add_typer(data_app, name="data")``. Exit codes follow
the main CLI: 0 success (or a clean manifest), 1 ``validate`` found problems, 2 invalid
input (a manifest that cannot be read, bad options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from audit.core.config import SynthConfig
from audit.core.errors import InputError

SYNTH_DEFAULTS = SynthConfig()  # `data synth`'s option defaults, shown by --help
app = typer.Typer(help="Import, validate and synthesise datasets (manifests of chest X-rays).",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _parse_renames(pairs: list[str]) -> dict[str, str]:
    renames = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise InputError(f"--rename: expected OLD=NEW, got {pair!r}")
        renames[old] = new
    return renames


def _fail(error: InputError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=error.exit_code)


@app.command("import")
def import_command(
    out: Annotated[Path, typer.Argument(help="Manifest CSV to write.")],
    folder: Annotated[Path | None, typer.Option(
        help="Image tree <folder>/<source>/<label>/<image> (or <label>/<image> with --source).")] = None,
    csv: Annotated[Path | None, typer.Option(help="Existing CSV to turn into a manifest.")] = None,
    dicom: Annotated[Path | None, typer.Option(
        help="DICOM tree, same layout as --folder; header fields become columns.")] = None,
    source: Annotated[str | None, typer.Option(help="Source name for a <label>/<image> tree.")] = None,
    rename: Annotated[list[str] | None, typer.Option(
        help="Column rename OLD=NEW for --csv (repeatable), e.g. --rename file=path, or "
             "--rename subject=patient_id for the patient ids.")] = None,
    masks: Annotated[Path | None, typer.Option(
        help="Folder of lung masks for --folder/--dicom, matched by relative path or file "
             "stem; unmatched images are reported.")] = None,
    patient_id_regex: Annotated[str | None, typer.Option(
        help="Regex on each file name whose first group (or group 'patient') is the patient "
             "id, e.g. '^(P\\d+)_'. Without patient ids every image is its own patient.")] = None,
) -> None:
    """Build a manifest from a folder tree, an existing CSV or DICOM files.

    Labels are taken as written (folder names or the CSV's label column). The classes are
    covid, opacity, other and normal; map any other label onto them with the run config's
    data.label_map (e.g. {tb: opacity}); `data validate --config` checks that mapping.
    """
    from audit.data.importers import import_csv, import_dicom, import_folder

    chosen = [name for name, value in (("--folder", folder), ("--csv", csv), ("--dicom", dicom)) if value]
    try:
        if len(chosen) != 1:
            raise InputError(f"give exactly one of --folder, --csv, --dicom (got {', '.join(chosen) or 'none'})")
        if (masks or patient_id_regex) and csv:
            raise InputError("--masks and --patient-id-regex go with --folder or --dicom; a "
                             "CSV brings mask_path and patient_id columns (see --rename)")
        if folder:
            frame = import_folder(folder, out, source=source, masks=masks,
                                  patient_id_regex=patient_id_regex)
        elif dicom:
            frame = import_dicom(dicom, out, source=source, masks=masks,
                                 patient_id_regex=patient_id_regex)
        else:
            frame = import_csv(csv, out, _parse_renames(rename or []))
    except InputError as error:
        raise _fail(error) from None
    typer.echo(f"wrote {out} ({len(frame)} rows)")


@app.command("validate")
def validate_command(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV/Parquet to check.")],
    report: Annotated[Path | None, typer.Option(
        help="Also write the problems to this file (.csv: a table; otherwise text).")] = None,
    near_duplicate_distance: Annotated[int | None, typer.Option(
        help="Largest 256-bit dhash distance reported as a near-duplicate (default 10).")] = None,
    config: Annotated[Path | None, typer.Option(
        help="Run config whose data.label_map maps the manifest's labels to the classes.")] = None,
) -> None:
    """Check every row; print one line per problem. Exit 0 clean, 1 problems, 2 unreadable."""
    from audit.core.config import load_config
    from audit.core.io import atomic_write, write_csv
    from audit.data.validate import validate_manifest

    options = {} if near_duplicate_distance is None else {"near_duplicate_distance": near_duplicate_distance}
    try:
        label_map = dict(load_config(config).data.label_map) if config else None
        result = validate_manifest(manifest, label_map, **options)
    except InputError as error:
        raise _fail(error) from None
    typer.echo(result.to_text(), nl=False)
    if report is not None:
        if report.suffix.lower() == ".csv":
            write_csv(result.problems, report)
        else:
            with atomic_write(report) as handle:
                handle.write(result.to_text())
    raise typer.Exit(code=result.exit_code)


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Option(help="Folder to write the phantoms and manifest.csv into.")],
    confounding: Annotated[float, typer.Option(
        help="0: sources balanced over labels; 1: each label its own source.")
    ] = SYNTH_DEFAULTS.confounding,
    n_per_class: Annotated[int, typer.Option(
        help="Images per class per source at confounding 0.")] = SYNTH_DEFAULTS.n_per_class,
    n_sources: Annotated[int, typer.Option(help="Sources (1-8).")] = SYNTH_DEFAULTS.n_sources,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = SYNTH_DEFAULTS.image_size,
    signal_strength: Annotated[float, typer.Option(
        help="Disease signal inside the lungs (0-3).")] = SYNTH_DEFAULTS.signal_strength,
    seed: Annotated[int, typer.Option(help="Random seed.")] = SYNTH_DEFAULTS.seed,
    no_site_traits: Annotated[bool, typer.Option(
        "--no-site-traits", help="No markers, borders or intensity profile per source.")] = False,
) -> None:
    """Generate synthetic phantom radiographs with a planted source shortcut.

    The defaults are those of the config's data.synth section.
    """
    from pydantic import ValidationError

    from audit.core.config import SiteTraits
    from audit.data.phantoms import generate_phantoms

    settings = {"confounding": confounding, "n_per_class": n_per_class, "n_sources": n_sources,
                "image_size": size, "signal_strength": signal_strength, "seed": seed}
    if no_site_traits:
        settings["site_traits"] = SiteTraits(markers=False, borders=False, intensity=False)
    try:
        config = SynthConfig(**settings)
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise _fail(InputError(f"synth options: {details}")) from None
    manifest = generate_phantoms(config, out)
    typer.echo(f"wrote {manifest}")
