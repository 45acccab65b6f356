"""Identity-policy Conditions are evaluated against each request's context, and EC2 checks
tag-on-create as AWS does.

AWS behaviour restored:
- a statement applies only when its ``Condition`` holds for the request: ``aws:ResourceTag``
  of the instance being terminated, ``aws:RequestTag``/``aws:TagKeys`` of the tags being
  applied, ``ec2:InstanceProfile``, ``aws:SourceIp``, ``aws:SecureTransport``, … (the keys:
  ``_request_context`` and ``_context_keys``; the operators: ``_conditions``). moto 5.2.5
  evaluates only ``StringEquals`` (and a failed one in an Allow counts as an explicit Deny);
  with no key in its context, a condition on ``aws:ResourceTag`` always held;
- an EC2 call that tags what it creates (``TagSpecification``, or the tags of the launch
  template RunInstances uses) also needs ``ec2:CreateTags`` on each tagged resource type,
  evaluated with ``ec2:CreateAction`` = the creating action (EC2 User Guide, "Grant
  permission to tag Amazon EC2 resources during creation"); moto 5.2.5 never checks it.

moto 5.2.5 hooks: ``moto.core.responses.BaseResponse.setup_class`` (captures the request for
its context) and ``moto.core.authorization.ActionAuthenticatorMixin.
_authenticate_and_authorize_normal_action`` (after the normal check: tag-on-create). The
identity-policy evaluation itself is ``resource_arns.check_action_permitted`` → ``_policy_eval``.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from phoenixci.localcloud.patches import _context_keys
from phoenixci.localcloud.patches._caller import Caller, current_caller, is_patched, mark, replace
from phoenixci.localcloud.patches._policy_eval import Decision, evaluate
from phoenixci.localcloud.patches._request_context import Request, _per_resource, capture, current_request

log = logging.getLogger(__name__)

_MARK = "__phoenixci_tag_on_create__"


def authorize_call(caller: Caller, request: Request, arns: Sequence[str]) -> Decision:
    """Decide ``request`` (service:action on ``arns``) for ``caller`` with its full context."""
    return evaluate(caller.policies(), f"{request.service}:{request.action}", list(arns) or ["*"],
                    context=_per_resource(request, caller.access_key))


def _tagged_types(request: Request) -> dict[str, dict[str, str]]:
    specs = {kind: tags for kind, tags in _context_keys.tag_specifications(request.params).items() if tags}
    if request.action == "RunInstances":
        for spec in _context_keys._launch_template_data(request).get("TagSpecifications") or []:
            tags = {str(t.get("Key")): str(t.get("Value", "")) for t in spec.get("Tags") or []}
            if tags:
                specs.setdefault(str(spec.get("ResourceType")), {}).update(tags)
    return specs


def tags_on_create_denial(caller: Caller, request: Request) -> tuple[str, str] | None:
    """(action, resource ARN) of the first tag-on-create the caller may not do, or None."""
    from phoenixci.localcloud.patches._cfn_calls import Where

    where = Where(request.region, request.account)
    for kind, tags in _tagged_types(request).items():
        params = {f"Tag.{i}.{f}": v for i, (k, val) in enumerate(tags.items(), start=1)
                  for f, v in (("Key", k), ("Value", val))}
        tagging = Request(service="ec2", action="CreateTags", params=params, region=request.region,
                          account=request.account, source_ip=request.source_ip, secure=request.secure,
                          via=request.via, extra={"ec2:CreateAction": request.action})
        arn = where.ec2(kind)
        if not authorize_call(caller, tagging, [arn]):
            log.info("%s may not tag %s on %s", caller.arn, arn, request.action)
            return "ec2:CreateTags", arn
    return None


def check() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.responses import BaseResponse

    from phoenixci.localcloud.patches import require

    require(BaseResponse, "setup_class")
    require(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action")


def install() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.responses import BaseResponse

    from phoenixci.localcloud.patches.ec2_denial import unauthorized

    if not is_patched(BaseResponse.setup_class):
        original_setup = BaseResponse.setup_class

        @functools.wraps(original_setup)
        def setup_class(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original_setup(self, *args, **kwargs)
            capture(self)
            return result

        replace(BaseResponse, "setup_class", mark(setup_class))

    original_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action
    if not getattr(original_authorize, _MARK, False):
        @functools.wraps(original_authorize)
        def authorize(self: Any, resource: str = "*") -> None:
            original_authorize(self, resource)
            caller = current_caller()
            if caller is None or getattr(self, "service_name", None) != "ec2":
                return
            request = current_request()
            if request is None or request.service != "ec2":
                return
            denied = tags_on_create_denial(caller, request)
            if denied:
                raise unauthorized(caller.arn, *denied)

        setattr(authorize, _MARK, True)
        replace(ActionAuthenticatorMixin, "_authenticate_and_authorize_normal_action", mark(authorize))
    log.debug("request conditions and tag-on-create installed")
