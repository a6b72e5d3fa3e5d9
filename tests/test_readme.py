"""The README stays accurate: every config key with its real default, every check with its
spec's metric and default policy, the exit codes the CLI documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from audit.core.config import AuditConfig, SiteTraits
from audit.gate import load_policy
from probes.registry import check_ids, specs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = ROOT / "examples"
ROW = re.compile(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \| (.*?) \|", re.MULTILINE)


def config_defaults(model: BaseModel, prefix: str = "") -> dict[str, object]:
    """Dotted key -> default (JSON form) of every leaf setting (site traits as one value)."""
    leaves = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel) and not isinstance(value, SiteTraits):
            leaves.update(config_defaults(value, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = json.loads(json.dumps(
                value.model_dump(mode="json") if isinstance(value, BaseModel) else value,
                default=str))
    return leaves


def documented_defaults() -> dict[str, str]:
    """Key -> default text of the rows of the README's "Config reference" section."""
    reference = README.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    return dict(ROW.findall(reference))


def test_readme_documents_every_config_key_and_nothing_else():
    assert set(documented_defaults()) == set(config_defaults(AuditConfig()))


def test_readme_defaults_are_the_real_defaults():
    documented = documented_defaults()
    wrong = {}
    for key, default in config_defaults(AuditConfig()).items():
        if json.loads(documented[key].strip("`")) != default:
            wrong[key] = (documented[key], default)
    assert wrong == {}


def test_readme_check_table_is_the_specs():
    """The "Checks" table: one row per registered check, in order, with its spec's metric
    meaning and default gate (the policy the gate really loads)."""
    table = README.split("## Checks", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.*) \| (\w+) above ([\d.]+)(, optional)? \|$",
                      table, re.MULTILINE)
    assert [row[0] for row in rows] == list(check_ids())
    policy = load_policy()
    for (check_id, metric, gate, threshold, optional), spec in zip(rows, specs(), strict=True):
        rule = policy.checks[check_id]
        assert metric == spec.metric, check_id
        assert (gate, float(threshold), not optional) == (rule.gate, rule.threshold,
                                                          rule.required), check_id


def test_readme_exit_codes_match_the_cli_help():
    from audit.cli import EXIT_CODES

    for code, words in (("0", "pass"), ("1", "a gating check failed"), ("2", "invalid input"),
                        ("3", "internal error"), ("130", "interrupted")):
        assert re.search(rf"^\| {code} \| .*{words}", README, re.MULTILINE), code
        assert f"{code} " in EXIT_CODES


def test_readme_requirements_table_is_the_specs_needs_and_the_shipped_policies():
    """"Which checks an audit requires": one row per check, its needs from its spec, and
    whether each policy (default and the two shipped) requires it."""
    section = README.split("## Which checks an audit requires", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| check |"))
    policies = [load_policy()] + [load_policy(EXAMPLES / name.strip(" `").split("/")[-1])
                                  for name in header.strip("|").split("|")[3:]]
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.*?) \|(.*)\|$", section, re.MULTILINE)
    assert [row[0] for row in rows] == list(check_ids())
    for (check_id, needs, required), spec in zip(rows, specs(), strict=True):
        assert needs == (", ".join(f"`{need}`" for need in spec.needs) or "-"), check_id
        expected = ["required" if policy.checks[check_id].required else "optional"
                    for policy in policies]
        assert [cell.strip() for cell in required.split("|")] == expected, check_id


def test_readme_offline_weights_table_is_keras_file_names():
    from models.backbones import BACKBONES, keras_weights_file_name

    section = README.split("### Offline: ImageNet weights", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9]+)` \| `([^`]+)` \|$", section, re.MULTILINE))
    assert rows == {backbone: keras_weights_file_name(backbone) for backbone in BACKBONES}
