"""Templates are read and their parameters checked before any API call."""
from __future__ import annotations

from pathlib import Path

import pytest

from phoenixci.errors import ConfigError, TemplateError
from phoenixci.templates import load_template, template_path

pytestmark = pytest.mark.unit


def test_both_templates_parse_with_short_form_tags() -> None:
    infra = load_template("infrastructure")
    app = load_template("app-server")
    assert {"RunId", "AdminCidr", "KeyName", "ImageId"} <= infra.required_parameters
    assert "Revision" in app.required_parameters
    assert infra.path == template_path("infrastructure")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n   Properties: [\n")
    with pytest.raises(TemplateError) as info:
        load_template(bad)
    message = str(info.value)
    assert "bad.yaml" in message and "line 4" in message and "not valid YAML" in message


def test_template_without_resources(tmp_path: Path) -> None:
    bad = tmp_path / "empty.yaml"
    bad.write_text("AWSTemplateFormatVersion: '2010-09-09'\nOutputs: {}\n")
    with pytest.raises(TemplateError, match="no top-level 'Resources'"):
        load_template(bad)


def test_missing_template_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read template"):
        load_template(tmp_path / "nope.yaml")


def test_missing_and_unknown_parameters_are_named() -> None:
    infra = load_template("infrastructure")
    with pytest.raises(ConfigError) as info:
        infra.check_parameters({"RunId": "r", "KeyName": "k", "ImageId": "ami-1", "Colour": "blue"})
    message = str(info.value)
    assert "missing parameter(s) AdminCidr" in message
    assert "unknown parameter(s) Colour" in message
    assert "infrastructure.yaml" in message


def test_defaults_make_parameters_optional() -> None:
    infra = load_template("infrastructure")
    infra.check_parameters({"RunId": "r", "AdminCidr": "10.0.0.0/8", "KeyName": "k", "ImageId": "ami-1"})
