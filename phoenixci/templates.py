"""Reading CloudFormation templates and checking parameters before any API call.

PyYAML is a host-side extra: on the CI agent (boto3 and the standard library only) a template
is sent to CloudFormation unparsed, and CloudFormation itself reports a bad template or missing
parameters (``stacks.create`` turns its answer into one clear TemplateError).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenixci.errors import ConfigError, TemplateError

#: the templates: ``infra/`` of the checkout, shipped inside the package as ``phoenixci/infra``
#: (a link to ``../infra``, copied into wheels) so the agent's install finds them too
INFRA_DIR = Path(__file__).resolve().parent / "infra"


@functools.cache
def _loader() -> Any:
    """A YAML loader that accepts CloudFormation's short-form tags, or None without PyYAML."""
    try:
        import yaml
    except ImportError:
        return None

    class CfnLoader(yaml.SafeLoader):
        """SafeLoader plus ``!Ref``, ``!Sub`` ... as their long forms."""

    CfnLoader.add_multi_constructor("!", _tag)
    return CfnLoader


def _tag(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
    import yaml

    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}



@dataclass(frozen=True)
class Template:
    """A parsed template: where it came from, its text, and its declared parameters."""

    path: Path
    body: str
    document: dict[str, Any] | None  # None: not parsed here (no PyYAML); CloudFormation checks it

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict((self.document or {}).get("Parameters") or {})

    @property
    def required_parameters(self) -> set[str]:
        return {name for name, spec in self.parameters.items() if "Default" not in (spec or {})}

    def check_parameters(self, given: dict[str, str]) -> None:
        """Raise ConfigError naming missing or unknown parameters, before the API sees them."""
        if self.document is None:
            return
        missing = sorted(self.required_parameters - set(given))
        unknown = sorted(set(given) - set(self.parameters))
        problems = []
        if missing:
            problems.append(f"missing parameter(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown parameter(s) {', '.join(unknown)}")
        if problems:
            known = ", ".join(sorted(self.parameters)) or "none"
            raise ConfigError(f"{self.path.name}: {'; '.join(problems)} (the template takes: {known})")


def template_path(name: str) -> Path:
    """``infrastructure`` → ``infra/infrastructure.yaml``; a path is returned as is."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml", ".json"}:
        return path
    return INFRA_DIR / f"{name}.yaml"


def load_template(name_or_path: str | Path) -> Template:
    """Read and parse a template; raise TemplateError with the file and line on bad YAML."""
    path = template_path(str(name_or_path))
    try:
        body = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(f"cannot read template {path}: {e.strerror}") from e
    loader = _loader()
    if loader is None:
        return Template(path=path, body=body, document=None)
    import yaml

    try:
        document = yaml.load(body, Loader=loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TemplateError(f"template {path}{where} is not valid YAML: {problem}") from e
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError(f"template {path} is not a CloudFormation template: "
                            "it has no top-level 'Resources' section")
    if not isinstance(document["Resources"], dict) or not document["Resources"]:
        raise TemplateError(f"template {path}: 'Resources' must be a non-empty mapping")
    return Template(path=path, body=body, document=document)
