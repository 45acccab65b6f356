"""IAM ``Condition`` blocks evaluated as AWS documents them (pure functions, no moto).

``evaluate_condition(block, context)`` is True when every operator of a statement's
``Condition`` element holds for the request ``context`` (context key -> value, or a list
of values for a multivalued key such as ``aws:TagKeys``; keys compare case-insensitively).

Rules (IAM User Guide, "IAM JSON policy elements: Condition operators", "Conditions with
multiple context keys or values", "Single-valued vs. multivalued context keys"):

- operators AND, keys of one operator AND, values of one key OR; a negated operator
  (``StringNotEquals``, ``ArnNotLike``, ``NotIpAddress``, ``NumericNotEquals``,
  ``DateNotEquals`` …) is true when the request value matches NONE of the values (NOR);
- a key absent from the request: false, except negated operators (true), ``…IfExists``
  (true), ``ForAllValues:`` (true) and ``Null`` (which tests exactly that);
- ``ForAllValues:`` every request value must satisfy the operator (an empty set does);
  ``ForAnyValue:`` at least one must (an empty set does not);
- String/Arn/Bool values may hold policy variables (``${aws:username}``, ``${*}`` …).

An operator this module does not know raises :class:`UnknownOperator`: AWS refuses such
a policy when it is stored, so the caller decides (a Deny then applies, an Allow does not).
"""
from __future__ import annotations

import base64
import binascii
import datetime
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Context = Mapping[str, Any]

NEGATED = frozenset({
    "StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NumericNotEquals",
    "DateNotEquals", "NotIpAddress", "ArnNotEquals", "ArnNotLike",
})
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}
#: a substituted policy variable that could not be resolved: matches nothing
_UNRESOLVED = "\x00unresolved\x00"


class UnknownOperator(ValueError):
    """A condition operator IAM does not define."""


# --------------------------------------------------------------------- context access
def lookup(context: Context, key: str) -> list[str] | None:
    """The request's values of ``key`` (None when absent; keys are case-insensitive)."""
    value = context.get(key)
    if value is None:
        lowered = key.lower()
        value = next((v for k, v in context.items() if k.lower() == lowered), None)
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    return [as_text(v) for v in items]


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(value: str, context: Context) -> str:
    """Replace policy variables (``${aws:username}``, ``${key, 'default'}``, ``${*}``)."""
    def one(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        if inner in _SPECIAL:
            return _SPECIAL[inner]
        name, _, default = inner.partition(",")
        found = lookup(context, name.strip())
        if found and len(found) == 1:
            return found[0]
        default = default.strip()
        if len(default) >= 2 and default[0] == default[-1] == "'":
            return default[1:-1]
        return _UNRESOLVED

    return _VARIABLE.sub(one, value)


# --------------------------------------------------------------------- matching of one value
@functools.lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """``*`` = any characters, ``?`` = one character; everything else literal."""
    return _wildcard_regex(pattern, ignore_case).fullmatch(value) is not None


def arn_like(pattern: str, value: str) -> bool:
    """ARN matching: each of the six colon-separated parts matched on its own."""
    want, have = pattern.split(":", 5), value.split(":", 5)
    if len(want) != 6 or len(have) != 6:
        return False
    return all(wildcard(w, h) for w, h in zip(want, have, strict=True))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_date(text: str) -> datetime.datetime | None:
    """W3C ISO 8601 forms (YYYY, YYYY-MM-DD, …THH:MM[:SS[.s]]TZD) or epoch seconds."""
    text = text.strip()
    if re.fullmatch(r"-?\d{5,}(\.\d+)?", text):
        return datetime.datetime.fromtimestamp(float(text), tz=datetime.UTC)
    if re.fullmatch(r"\d{4}", text):
        text += "-01-01"
    elif re.fullmatch(r"\d{4}-\d{2}", text):
        text += "-01"
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _ip_in(actual: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(actual.strip()) in ipaddress.ip_network(network.strip(), strict=False)
    except ValueError:
        return False


def _binary(actual: str, wanted: str) -> bool:
    try:
        return base64.b64decode(wanted, validate=True) in (actual.encode(), _b64(actual))
    except (binascii.Error, ValueError):
        return False


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b"\x00invalid"


def _ordered(parse: Callable[[str], Any], compare: Callable[[Any, Any], bool]) -> Callable[[str, str], bool]:
    def match(actual: str, wanted: str) -> bool:
        a, w = parse(actual), parse(wanted)
        return a is not None and w is not None and compare(a, w)

    return match


#: the positive form of each operator family: (request value, policy value) -> bool
_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda a, w: a == w,
    "StringEqualsIgnoreCase": lambda a, w: a.lower() == w.lower(),
    "StringLike": lambda a, w: wildcard(w, a),
    "NumericEquals": _ordered(_number, lambda a, w: a == w),
    "NumericLessThan": _ordered(_number, lambda a, w: a < w),
    "NumericLessThanEquals": _ordered(_number, lambda a, w: a <= w),
    "NumericGreaterThan": _ordered(_number, lambda a, w: a > w),
    "NumericGreaterThanEquals": _ordered(_number, lambda a, w: a >= w),
    "DateEquals": _ordered(parse_date, lambda a, w: a == w),
    "DateLessThan": _ordered(parse_date, lambda a, w: a < w),
    "DateLessThanEquals": _ordered(parse_date, lambda a, w: a <= w),
    "DateGreaterThan": _ordered(parse_date, lambda a, w: a > w),
    "DateGreaterThanEquals": _ordered(parse_date, lambda a, w: a >= w),
    "Bool": lambda a, w: a.lower() == w.lower(),
    "BinaryEquals": _binary,
    "IpAddress": _ip_in,
    "ArnEquals": lambda a, w: arn_like(w, a),
    "ArnLike": lambda a, w: arn_like(w, a),
}
_POSITIVE_OF = {
    "StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike", "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals", "NotIpAddress": "IpAddress",
    "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike",
}
#: operators whose policy values may hold policy variables
_VARIABLES_ALLOWED = ("String", "Arn", "Bool")


def parse_operator(operator: str) -> tuple[str | None, str, bool]:
    """``ForAnyValue:StringLikeIfExists`` -> ("ForAnyValue", "StringLike", True)."""
    qualifier: str | None = None
    name = operator.strip()
    if ":" in name:
        prefix, name = name.split(":", 1)
        if prefix.lower() not in ("forallvalues", "foranyvalue"):
            raise UnknownOperator(f"unknown condition set operator {prefix!r} in {operator!r}")
        qualifier = "ForAllValues" if prefix.lower() == "forallvalues" else "ForAnyValue"
    if_exists = name.endswith("IfExists") and name != "IfExists"
    base = name[: -len("IfExists")] if if_exists else name
    if base not in _MATCHERS and base not in _POSITIVE_OF and base != "Null":
        raise UnknownOperator(f"unknown condition operator {operator!r}")
    if base == "Null" and (if_exists or qualifier):
        raise UnknownOperator(f"{operator!r}: Null takes neither IfExists nor a set operator")
    return qualifier, base, if_exists


def _policy_values(wanted: Any, base: str, context: Context) -> list[str]:
    items = wanted if isinstance(wanted, (list, tuple)) else [wanted]
    values = [as_text(v) for v in items]
    if base.startswith(_VARIABLES_ALLOWED):
        values = [substitute(v, context) for v in values]
    return values


def _value_holds(base: str, actual: str, values: Sequence[str]) -> bool:
    """One request value against the policy's values: OR, or NOR for a negated operator."""
    positive = _POSITIVE_OF.get(base, base)
    matches = any(_MATCHERS[positive](actual, v) for v in values if v != _UNRESOLVED)
    return not matches if base in NEGATED else matches


def key_holds(operator: str, key: str, wanted: Any, context: Context) -> bool:
    """Does ``operator`` hold for context key ``key`` against the policy's ``wanted`` value(s)?"""
    qualifier, base, if_exists = parse_operator(operator)
    actual = lookup(context, key)
    if base == "Null":
        is_null = actual is None or actual == [] or actual == [""]
        wants_null = _policy_values(wanted, base, context)
        return any((w.lower() == "true") == is_null for w in wants_null)
    values = _policy_values(wanted, base, context)
    if actual is None:
        if if_exists or qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return base in NEGATED
    if qualifier == "ForAllValues":
        return all(_value_holds(base, a, values) for a in actual)
    if qualifier == "ForAnyValue":
        return any(_value_holds(base, a, values) for a in actual)
    if base in NEGATED:  # a multivalued key without a set operator: none may match
        return all(_value_holds(base, a, values) for a in actual)
    return any(_value_holds(base, a, values) for a in actual)


def evaluate_condition(block: Mapping[str, Any] | None, context: Context) -> bool:
    """True when every operator (and every key under it) of ``block`` holds for ``context``.

    An empty or missing block holds. Raises :class:`UnknownOperator` for an operator IAM
    does not define.
    """
    for operator, body in (block or {}).items():
        if not isinstance(body, Mapping):
            raise UnknownOperator(f"condition operator {operator!r} needs a key-value map")
        for key, wanted in body.items():
            if not key_holds(operator, str(key), wanted, context):
                return False
    return True


__all__ = ["NEGATED", "UnknownOperator", "arn_like", "evaluate_condition", "key_holds", "lookup",
           "parse_date", "parse_operator", "substitute", "wildcard"]
