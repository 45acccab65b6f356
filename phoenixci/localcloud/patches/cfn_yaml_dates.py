"""Unquoted dates in YAML templates stay strings, as in CloudFormation.

AWS behaviour restored: CloudFormation's YAML has no timestamp type — ``Version: 2012-10-17``
unquoted (as in most of AWS's own examples) is the string ``"2012-10-17"``. moto 5.2.5 parses
templates with PyYAML's full loader, which makes it a ``datetime.date``; ``AWS::IAM::Policy`` and
``AWS::IAM::ManagedPolicy`` then fail with "Object of type date is not JSON serializable" (the
stack rolls back), and any other property given a date-like value gets a date object.

Every date or datetime in the parsed template becomes the text it stood for (ISO 8601).
Hook: ``moto.cloudformation.models.Stack.parse_template`` (a stack's template, at create and
update; change sets, which phoenix never uses, parse their own).
"""
from __future__ import annotations

import datetime
import logging
from typing import Any

log = logging.getLogger(__name__)


def dates_as_text(node: Any) -> Any:
    """``node`` with every date/datetime replaced by its ISO text (containers rebuilt, rest as is)."""
    if isinstance(node, datetime.datetime):
        return node.isoformat()
    if isinstance(node, datetime.date):
        return node.strftime("%Y-%m-%d")
    if isinstance(node, dict):
        return {key: dates_as_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [dates_as_text(value) for value in node]
    return node


def check() -> None:
    from moto.cloudformation.models import Stack

    from phoenixci.localcloud.patches import require

    require(Stack, "parse_template")


def install() -> None:
    from moto.cloudformation.models import Stack

    from phoenixci.localcloud.patches._caller import is_patched, mark, replace

    original = Stack.__dict__["parse_template"].__func__
    if is_patched(original):
        return

    def parse_template(template: str) -> dict[str, Any]:
        return dates_as_text(original(template))

    replace(Stack, "parse_template", staticmethod(mark(parse_template)))
    log.debug("CloudFormation YAML dates as strings installed")


__all__ = ["check", "dates_as_text", "install"]
