"""cfn-lint and checkov are clean on both CloudFormation templates; every skip says why."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = [ROOT / "infra" / "infrastructure.yaml", ROOT / "infra" / "app-server.yaml"]
BIN = Path(sys.executable).parent
LINT_TIMEOUT = float(os.environ.get("PHOENIXCI_LINT_TIMEOUT", "300"))


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / cmd[0]
    if not tool.exists():
        pytest.fail(f"{tool} is missing: install it into the venv (pip install {cmd[0]})")
    # BC_SKIP_MAPPING/--skip-download: checkov must not try to reach its platform.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    return subprocess.run([str(tool), *cmd[1:]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=LINT_TIMEOUT, check=False)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_clean(template: Path) -> None:
    proc = _run("cfn-lint", str(template.relative_to(ROOT)))
    assert proc.returncode == 0, f"cfn-lint {template.name}:\n{proc.stdout}{proc.stderr}"


def _checkov_reports(stdout: str) -> list[dict[str, Any]]:
    data = json.loads(stdout)
    return data if isinstance(data, list) else [data]


def test_checkov_clean_and_skips_justified() -> None:
    args = ["checkov", "--framework", "cloudformation", "--skip-download", "-o", "json"]
    for template in TEMPLATES:
        args += ["-f", str(template.relative_to(ROOT))]
    proc = _run(*args)
    shown = f"checkov:\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, shown
    reports = _checkov_reports(proc.stdout)
    assert [r["check_type"] for r in reports] == ["cloudformation"], shown
    summary = reports[0]["summary"]
    assert summary["failed"] == 0, shown
    assert summary["parsing_errors"] == 0, shown
    assert summary["passed"] > 0, shown
    scanned = {Path(c["file_path"]).name for c in reports[0]["results"]["passed_checks"]}
    assert scanned == {t.name for t in TEMPLATES}, shown
    for skipped in reports[0]["results"]["skipped_checks"]:
        comment = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(comment.strip()) > 20, f"skip of {skipped['check_id']} on " \
            f"{skipped['resource']} needs a real justification, got {comment!r}"
