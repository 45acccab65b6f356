"""The README's example test file is the one the acceptance suite runs, word for word."""
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_example_that_runs() -> None:
    example = (ROOT / "tests/acceptance/test_example.py").read_text()
    assert f"```python\n{example}```" in (ROOT / "README.md").read_text()


def test_every_fixture_of_the_plugin_is_documented() -> None:
    import phoenixci.plugin as plugin

    readme = (ROOT / "README.md").read_text()
    fixtures = [name for name, obj in vars(plugin).items() if hasattr(obj, "_fixture_function_marker")
                or type(obj).__name__ == "FixtureFunctionDefinition"]
    assert len(fixtures) >= 13, fixtures
    missing = [name for name in fixtures if f"`{name}`" not in readme]
    assert missing == [], f"fixtures not in the README: {missing}"
