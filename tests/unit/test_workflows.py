"""The workflow files users copy are valid GitHub Actions workflows (the schema check-jsonschema
ships, no network) and run what the README says: lint + unit/integration before merge, the
acceptance suite on AWS at night with OIDC credentials and a leak check."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def test_workflows_validate_against_the_github_schema() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["nightly.yml", "pre-merge.yml"]
    done = subprocess.run([str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema",
                           "vendor.github-workflows", *map(str, files)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_nightly_runs_the_acceptance_suite_on_aws_with_oidc_and_a_leak_check() -> None:
    flow = yaml.safe_load((WORKFLOWS / "nightly.yml").read_text())
    assert flow["permissions"]["id-token"] == "write"
    steps = flow["jobs"]["acceptance-aws"]["steps"]
    text = yaml.safe_dump(steps)
    assert "aws-actions/configure-aws-credentials" in text and "aws-access-key-id" not in text
    assert "pytest -m acceptance --backend" in text and "--junitxml" in text
    leak = [s for s in steps if "phoenixci leaks" in s.get("run", "")]
    assert leak and leak[0]["if"] == "always()"


def test_pre_merge_lints_and_runs_unit_and_integration_tests_as_root() -> None:
    flow = yaml.safe_load((WORKFLOWS / "pre-merge.yml").read_text())
    lint = " ".join(step.get("run", "") for step in flow["jobs"]["lint"]["steps"])
    for tool in ("ruff", "mypy", "cfn-lint", "checkov", "ansible-lint --offline --profile production"):
        assert tool in lint, tool
    tests = flow["jobs"]["tests"]
    assert "--privileged" in tests["container"]["options"]
    assert "-m 'unit or integration'" in yaml.safe_dump(tests["steps"])
