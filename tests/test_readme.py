"""The README stays accurate: every config key with its real default, every check id with
its default policy, the exit codes the CLI documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel

from audit.core.config import AuditConfig, SiteTraits
from audit.gate import load_policy
from probes.registry import CHECK_IDS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
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
        if key == "probes.checks":  # documented in words: "all nine check ids"
            continue
        if json.loads(documented[key].strip("`")) != default:
            wrong[key] = (documented[key], default)
    assert wrong == {}


def test_readme_lists_every_check_with_its_default_policy():
    policy = load_policy()
    for check_id in CHECK_IDS:
        rule = policy.checks[check_id]
        row = re.search(rf"^\| `{re.escape(check_id)}` \|.*\| (\w+) above ([\d.]+) \|$", README,
                        re.MULTILINE)
        assert row, check_id
        assert (row.group(1), float(row.group(2))) == (rule.gate, rule.threshold)


def test_readme_exit_codes_match_the_cli_help():
    from audit.cli import EXIT_CODES

    for code, words in (("0", "pass"), ("1", "a gating check failed"), ("2", "invalid input"),
                        ("3", "internal error"), ("130", "interrupted")):
        assert re.search(rf"^\| {code} \| .*{words}", README, re.MULTILINE), code
        assert f"{code} " in EXIT_CODES
