"""No test calls moto's ``mock_aws`` in the pytest process.

``mock_aws`` resets moto's process-wide backends when it starts and stops. A whole-suite run serves
the session's local cloud from this process (phoenixci.localcloud.api), so one in-process
``mock_aws`` wipes its users and keys: every later call fails with InvalidClientTokenId and the
session's leak check cannot run (seen in CI at stop 11). Probes of plain moto run in a child
process instead (a ``main()`` run as a script, or a script string given to ``python -c``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]


def _in_process_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(TESTS.parent) if path.is_relative_to(TESTS.parent) else path
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name == "main":
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Name) and inner.id == "mock_aws":
                found.append(f"{where}:{inner.lineno} in {node.name}()")
    for node in tree.body:  # module-level decorators and with-blocks outside functions
        for inner in ast.walk(node):
            if (isinstance(inner, ast.Name) and inner.id == "mock_aws"
                    and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Import, ast.ImportFrom))):
                found.append(f"{where}:{inner.lineno} at module level")
    return found


def test_no_test_mocks_aws_in_the_pytest_process() -> None:
    uses = [use for path in sorted(TESTS.rglob("*.py")) for use in _in_process_uses(path)]
    assert not uses, ("mock_aws in the pytest process wipes the session's local cloud; run the moto part in a "
                      "child process (see tests/unit/test_launches.py):\n" + "\n".join(uses))


def test_the_guard_sees_a_decorated_test(tmp_path: Path) -> None:
    bad = tmp_path / "test_probe.py"
    bad.write_text("from moto import mock_aws\n\n@mock_aws\ndef test_x():\n    pass\n")
    assert any("in test_x()" in use for use in _in_process_uses(bad))
    bad.write_text("with mock_aws():\n    pass\n")
    assert any("module level" in use for use in _in_process_uses(bad))
    bad.write_text("def main():\n    from moto import mock_aws\n    with mock_aws():\n        pass\n")
    assert _in_process_uses(bad) == []
