"""The ``data`` sub-app: import, validate (exit codes 0/1/2, report file) and synth."""

from __future__ import annotations

import re

import pandas as pd
from typer.testing import CliRunner

from audit.data.cli import app
from tests.data_fixtures import distinct_image, good_corpus, write_manifest, write_png

runner = CliRunner()


def test_validate_clean_manifest_exits_zero_and_writes_report(tmp_path):
    manifest = good_corpus(tmp_path, n_per_class=1, size=64)
    result = runner.invoke(app, ["validate", str(manifest), "--report", str(tmp_path / "r.txt")])
    assert result.exit_code == 0, result.output
    assert "4 rows, 4 ok, 0 problem(s)" in result.output
    assert (tmp_path / "r.txt").read_text() == result.stdout


def test_validate_with_problems_exits_one_and_lists_them(tmp_path):
    write_png(tmp_path / "a.png", distinct_image(1, 64))
    path = write_manifest(tmp_path, [{"path": "a.png", "label": "covid", "source": "s"},
                                     {"path": "gone.png", "label": "covid", "source": "s"}])
    result = runner.invoke(app, ["validate", str(path), "--report", str(tmp_path / "r.csv")])
    assert result.exit_code == 1
    assert "gone.png  missing file" in result.output
    report = pd.read_csv(tmp_path / "r.csv")
    assert report[["row", "reason"]].values.tolist() == [[2, "missing file"]]


def test_validate_unreadable_manifest_exits_two(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "nope.csv: cannot read manifest table" in result.output


def test_import_folder_then_validate(tmp_path):
    write_png(tmp_path / "tree" / "s1" / "covid" / "a.png", distinct_image(1, 64))
    write_png(tmp_path / "tree" / "s2" / "normal" / "b.png", distinct_image(2, 64))
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["import", str(out), "--folder", str(tmp_path / "tree")])
    assert result.exit_code == 0 and "(2 rows)" in result.output
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0


def test_import_csv_with_renames(tmp_path):
    write_png(tmp_path / "a.png", distinct_image(1, 64))
    pd.DataFrame({"file": ["a.png"], "dx": ["covid"], "site": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["import", str(out), "--csv", str(tmp_path / "t.csv"),
                                 "--rename", "file=path", "--rename", "dx=label", "--rename", "site=source"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out).columns.tolist() == ["path", "label", "source"]


def test_import_option_errors_exit_two(tmp_path):
    result = runner.invoke(app, ["import", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "give exactly one of --folder, --csv, --dicom (got none)" in result.output
    pd.DataFrame({"a": ["1"]}).to_csv(tmp_path / "t.csv", index=False)
    result = runner.invoke(app, ["import", str(tmp_path / "m.csv"), "--csv", str(tmp_path / "t.csv"),
                                 "--rename", "nonsense"])
    assert result.exit_code == 2 and "--rename: expected OLD=NEW, got 'nonsense'" in result.output


def test_synth_writes_a_valid_manifest(tmp_path):
    out = tmp_path / "phantoms"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n-per-class", "2", "--size", "64",
                                 "--confounding", "0.5", "--seed", "3", "--no-site-traits"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "manifest.csv")
    assert set(frame["label"]) == {"covid", "opacity", "other", "normal"}
    assert runner.invoke(app, ["validate", str(out / "manifest.csv")]).exit_code == 0


def test_synth_rejects_bad_options(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--confounding", "1.5"])
    assert result.exit_code == 2 and "synth options: confounding" in result.output


def test_validate_takes_the_label_map_of_a_config(tmp_path):
    write_png(tmp_path / "a.png", distinct_image(1, 64))
    path = write_manifest(tmp_path, [{"path": "a.png", "label": "TB", "source": "s"}])
    unmapped = runner.invoke(app, ["validate", str(path)])
    assert unmapped.exit_code == 1 and "unknown label 'TB'" in unmapped.output
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  label_map: {TB: opacity}\n")
    mapped = runner.invoke(app, ["validate", str(path), "--config", str(config)])
    assert mapped.exit_code == 0, mapped.output


def test_validate_a_header_only_manifest_is_a_problem(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("path,label,source\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "no data rows: the manifest has a header only" in result.output


def test_validate_names_a_symlink_loop_and_a_broken_link(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    path = write_manifest(tmp_path, [{"path": "loop.png", "label": "covid", "source": "s"},
                                     {"path": "dangling.png", "label": "covid", "source": "s"}])
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "loop.png      file is a symbolic link loop" in result.output
    assert "dangling.png  file is a broken symbolic link" in result.output


def _help(command: str) -> str:
    """``data COMMAND --help`` as one line of words (the help box's borders removed)."""
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_synth_help_shows_the_config_defaults():
    from audit.core.config import SynthConfig

    text, defaults = _help("synth"), SynthConfig()
    for option, field in (("--confounding", "confounding"), ("--n-per-class", "n_per_class"),
                          ("--n-sources", "n_sources"), ("--size", "image_size"),
                          ("--signal-strength", "signal_strength"), ("--seed", "seed")):
        shown = re.search(rf"{option} .*?\[default: ([^\]]+)\]", text)
        assert shown and shown.group(1) == str(getattr(defaults, field)), option


def test_import_help_names_the_labels_patient_ids_and_masks():
    from audit.core.config import CLASSES

    text = _help("import")
    assert all(label in text for label in CLASSES)
    assert "label_map" in text and "--patient-id-regex" in text and "--masks" in text
    assert "every image is its own patient" in text
