"""A new user's path, end to end, on a folder tree made from the real set
(``../shared/data/cxr-real``): README "Audit your own data", command for command.

The tree is what a user brings: ``images/<source>/<label>/<file>`` from two sources
(shenzhen, kermany) with two labels of the user's own naming, ``normal`` and ``abnormal``
(tuberculosis in shenzhen, viral pneumonia in kermany: both labels in both sources, so
``generalization.leave_one_source_out`` can hold either source out), lung masks in their
own ``masks/`` tree of the same layout, and the patient id in each file name
(``P0007_1.png``). The commands are read from the README's quickstart and run in-process;
the one edit between ``init`` and ``run`` is what the README says to set for a first run
in minutes, plus the offline ``models.weights_dirs``.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from audit.core.result import AuditResult
from tests.conftest import MOBILENET_V2_035, REAL_DATA, WEIGHTS_DIR, cxr_audit

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

README = Path(__file__).resolve().parents[1] / "README.md"
PER_CELL = 10  # images per source x real label
USER_LABELS = {"normal": "normal", "other": "abnormal", "opacity": "abnormal"}
CELLS = (("shenzhen", "normal"), ("shenzhen", "other"), ("kermany", "normal"),
         ("kermany", "opacity"))


def quickstart() -> tuple[list[list[str]], dict]:
    """The quickstart's ``cxr-audit`` commands (arguments after the program name) and its
    first-run settings block."""
    section = README.read_text().split("\n## Audit your own data", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [shlex.split(line, comments=True)[1:] for line in bash.splitlines()
                if line.startswith("cxr-audit ")]
    settings = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    return commands, settings


def user_tree(folder: Path, seed: int = 0) -> pd.DataFrame:
    """``folder/images`` and ``folder/masks`` from the real set: ``PER_CELL`` masked images
    per cell of ``CELLS``, each file named ``P<patient>_<k>.png``. Returns the rows used."""
    real = pd.read_csv(REAL_DATA, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    picked = pd.concat([
        real[(real.source == source) & (real.label == label) & (real.mask_path != "")]
        .pipe(lambda cell: cell.iloc[np.sort(rng.choice(len(cell), PER_CELL, replace=False))])
        for source, label in CELLS])
    patient_numbers = {pid: n for n, pid in enumerate(sorted(set(picked.patient_id)), 1)}
    for k, row in enumerate(picked.itertuples()):
        relative = Path(row.source, USER_LABELS[row.label],
                        f"P{patient_numbers[row.patient_id]:04d}_{k}.png")
        for tree, column in (("images", "path"), ("masks", "mask_path")):
            (folder / tree / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REAL_DATA.parent / getattr(row, column), folder / tree / relative)
    return picked


def merged(config: dict, settings: dict) -> dict:
    """``config`` with each section's keys set from ``settings`` (a user's edit)."""
    return {**config, **{section: {**config.get(section, {}), **keys}
                         for section, keys in settings.items()}}


@pytest.mark.skipif(not MOBILENET_V2_035.exists(),
                    reason="needs the MobileNetV2 0.35 ImageNet weights in ../shared/weights")
def test_the_readme_quickstart_takes_a_real_folder_tree_to_a_verdict(tmp_path, monkeypatch):
    picked = user_tree(tmp_path)
    commands, settings = quickstart()
    assert [command[:2] for command in commands] == [
        ["data", "import"], ["init", "manifest.csv"], ["data", "validate"], ["run", "audit.yaml"]]
    monkeypatch.chdir(tmp_path)
    data_import, init, validate, run = commands

    assert cxr_audit(monkeypatch, *data_import) == 0
    manifest = pd.read_csv("manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == len(picked) and (manifest.mask_path != "").all()
    assert manifest.patient_id.nunique() == picked.patient_id.nunique()

    assert cxr_audit(monkeypatch, *init) == 0
    starter = yaml.safe_load(Path("audit.yaml").read_text())
    assert starter["data"]["label_map"] == {"abnormal": "other"}
    assert starter["probes"]["target_class"] == "other"
    assert starter["segmentation"]["source"] == "manifest"  # every image has its mask

    assert cxr_audit(monkeypatch, *validate) == 0

    edited = merged(starter, settings)
    edited["models"]["weights_dirs"] = [str(WEIGHTS_DIR)]  # offline (README "Offline")
    Path("audit.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    code = cxr_audit(monkeypatch, *run)

    result = AuditResult.load_json(Path(run[run.index("--out") + 1]) / "summary.json")
    assert code == (0 if result.verdict == "pass" else 1), result.verdict
    not_run = {check.check_id: check.reason for check in result.checks if not check.ran}
    # Every check runs but the two this tree cannot feed: no external manifest was given,
    # and in this small test split no source holds both labels.
    assert set(not_run) == {"generalization.external", "performance.within_source"}, not_run
    assert "data.external" in not_run["generalization.external"]
    masking = result.check("masking.raw_vs_lung")
    assert masking.details["target_class"] == "other" and masking.details["n_other"] > 0
    assert result.check("ablation.class_size").details["n_other_test"] > 0
