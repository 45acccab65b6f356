"""What phoenixci creates on real AWS, for how long, and roughly what that costs.

Nothing is created on ``aws://`` without an explicit acknowledgement (``--accept-aws-cost`` or
``PHOENIXCI_ACCEPT_AWS_COST=1``): ``require_acknowledgement`` refuses with the estimate in one
line, before any client is made. With it, the commands print the estimate, then ``preflight``
checks the credentials and the region's Debian 12 image before the first resource exists.

Instance types and counts come from the templates (``InstanceType`` defaults of
infra/infrastructure.yaml and infra/app-server.yaml); prices from the small table below:
us-east-1 on-demand list prices for Linux, an approximation everywhere else. Durations are what
we expect on EC2, stated as assumptions, not measured here (this machine never reaches AWS).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from phoenixci.backends import parse_url
from phoenixci.errors import ConfigError

ACK_OPTION = "--accept-aws-cost"
ACK_ENV = "PHOENIXCI_ACCEPT_AWS_COST"

#: the date of the price table (AWS list prices, us-east-1, on-demand, Linux, USD)
PRICES_AS_OF = "2024-06"
INSTANCE_USD_PER_HOUR = {
    "t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832,
    "t3a.micro": 0.0094, "t3a.small": 0.0188, "t3a.medium": 0.0376,
    "m5.large": 0.096, "m6i.large": 0.096, "c5.large": 0.085,
}
#: every public IPv4 address, Elastic or not, in use or idle (since 2024-02-01)
PUBLIC_IPV4_USD_PER_HOUR = 0.005
#: gp3 root volumes (the AMI's size: 8 GiB for Debian's images) and detailed monitoring
#: (the templates set Monitoring: true; 7 metrics × $0.30 per month), per instance
VOLUME_USD_PER_HOUR = 8 * 0.08 / 730
MONITORING_USD_PER_HOUR = 7 * 0.30 / 730


@dataclass(frozen=True)
class Command:
    """What one phoenixci command runs on AWS: the wall time, and whether it stays up after."""

    name: str
    label: str
    minutes: int
    assumption: str
    stays_up: bool = False
    extra_infra_stacks: int = 0


COMMANDS = {
    "up": Command("up", "`phoenixci up`", 15, "EC2 boot, Ansible installing Debian packages and Buildbot, the first build "
                  "and deploy", stays_up=True),
    "demo": Command("demo", "`phoenixci demo`", 30, "up, one more commit built and deployed, down"),
    "pytest": Command("pytest", "a pytest session (-m acceptance)", 45, "the acceptance story's environment plus the session's own "
                      "infrastructure stack and short-lived app servers", extra_infra_stacks=1),
}


@dataclass(frozen=True)
class Estimate:
    command: Command
    region: str
    ci_types: tuple[str, ...]       # one per instance of the infrastructure stack
    app_type: str
    elastic_ips: int
    public_ipv4: int
    usd_per_hour: float
    unpriced: tuple[str, ...] = ()  # instance types missing from the price table (not counted)

    def types(self) -> str:
        counts: dict[str, int] = {}
        for t in [*self.ci_types * (1 + self.command.extra_infra_stacks), self.app_type]:
            counts[t] = counts.get(t, 0) + 1
        return " + ".join(f"{n} × {t}" for t, n in counts.items())

    def cost(self) -> str:
        if self.command.stays_up:
            return (f"~{self.command.minutes} min to create, then ≈ ${self.usd_per_hour:.2f}/h "
                    f"(≈ ${24 * self.usd_per_hour:.2f}/day) until `phoenixci down`")
        return f"~{self.command.minutes} min, ≈ ${self.usd_per_hour * self.command.minutes / 60:.2f} in all"

    def one_line(self) -> str:
        return (f"{self.command.label} runs {self.types()} instances, {self.public_ipv4} public "
                f"IPv4 addresses and an S3 bucket in {self.region}: {self.cost()} "
                f"(approximate: us-east-1 on-demand list prices of {PRICES_AS_OF})")

    def text(self) -> str:
        c = self.command
        return "\n".join([
            f"AWS cost estimate for {c.label} in {self.region} (approximate: us-east-1 on-demand "
            f"Linux list prices of {PRICES_AS_OF}; other regions differ by a few to 20 %):",
            f"  instances: {self.types()} — CI server and CI agent (infra/infrastructure.yaml), the app "
            "server (infra/app-server.yaml); a second app server for a few minutes during each deploy",
            f"  time: ~{c.minutes} min on EC2 (assumed: {c.assumption})"
            + ("; the environment then runs, and costs, until `phoenixci down`" if c.stays_up else ""),
            f"  rate: ≈ ${self.usd_per_hour:.3f}/h while it runs: instances, {self.public_ipv4} public IPv4 "
            f"addresses ({self.elastic_ips} Elastic IPs) at ${PUBLIC_IPV4_USD_PER_HOUR}/h each, gp3 root "
            "volumes and detailed monitoring",
            f"  total: {self.cost()}",
            "  minor: the S3 artifact bucket (a few MB, < $0.01); CloudFormation, IAM and the VPC cost nothing",
            *([f"  not counted: no price for {', '.join(self.unpriced)} in phoenixci/costs.py"]
              if self.unpriced else []),
        ])


def estimate(command: str = "up", region: str = "us-east-1") -> Estimate:
    """The estimate for ``command`` (up | demo | pytest), from the templates' parameter defaults."""
    from phoenixci.templates import load_template

    try:
        spec = COMMANDS[command]
    except KeyError:
        raise ConfigError(f"no cost estimate for {command!r}: use one of {', '.join(COMMANDS)}") from None
    infra, app = load_template("infrastructure"), load_template("app-server")
    if infra.document is None or app.document is None:
        raise ConfigError("the cost estimate reads the templates and needs PyYAML: pip install 'phoenixci[host]'")
    ci_types = tuple(_instance_type(infra.document, r) for r in _resources(infra.document, "AWS::EC2::Instance"))
    (app_type,) = (_instance_type(app.document, r) for r in _resources(app.document, "AWS::EC2::Instance"))
    eips = _resources(infra.document, "AWS::EC2::EIP")
    with_eip = {_ref((r.get("Properties") or {}).get("InstanceId")) for r in eips}
    infra_instances = _resources(infra.document, "AWS::EC2::Instance", names=True)
    # each instance gets a public address at launch; an Elastic IP replaces it, the app's EIP
    # replaces the live app server's
    public = len(eips) + sum(1 for name in infra_instances if name not in with_eip)
    stacks = 1 + spec.extra_infra_stacks
    instances_usd = stacks * sum(INSTANCE_USD_PER_HOUR.get(t, 0.0) for t in ci_types) \
        + INSTANCE_USD_PER_HOUR.get(app_type, 0.0)
    count = stacks * len(ci_types) + 1
    per_hour = (instances_usd + stacks * public * PUBLIC_IPV4_USD_PER_HOUR
                + count * (VOLUME_USD_PER_HOUR + MONITORING_USD_PER_HOUR))
    unpriced = tuple(sorted({t for t in (*ci_types, app_type) if t not in INSTANCE_USD_PER_HOUR}))
    return Estimate(spec, region, ci_types, app_type, stacks * len(eips), stacks * public, per_hour, unpriced)


def require_acknowledgement(backend_url: str, accepted: bool, command: str = "up") -> str | None:
    """On aws://: the estimate text when ``accepted``, else ConfigError (one line, the estimate and
    how to acknowledge). On every other backend: None. Makes no client and no request."""
    scheme, _, options = parse_url(backend_url)
    if scheme != "aws":
        return None
    region = options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
        or "the default region"
    found = estimate(command, region)
    if not accepted:
        raise ConfigError(f"aws:// creates billable resources: {found.one_line()}; acknowledge the cost "
                          f"with {ACK_OPTION} or {ACK_ENV}=1")
    return found.text()


def preflight(backend_url: str) -> str:
    """Before anything exists on aws://: the credentials work (CredentialsError otherwise) and the
    region publishes the Debian 12 image (ConfigError otherwise). Returns a line naming the image."""
    from phoenixci import images
    from phoenixci.backends import get_backend

    backend = get_backend(backend_url)
    account = backend.check_credentials()  # with no credentials at all: fails before any request
    image = images.image_for(backend)
    return f"account {account}, region {backend.region}: image {image} ({images.DEBIAN_12_PARAMETER})"


def _resources(document: dict[str, Any], kind: str, *, names: bool = False) -> list[Any]:
    found = [(n, r) for n, r in (document.get("Resources") or {}).items() if (r or {}).get("Type") == kind]
    return [n for n, _ in found] if names else [r for _, r in found]


def _instance_type(document: dict[str, Any], resource: dict[str, Any]) -> str:
    """An instance's type: a literal, or the default of the parameter it refers to."""
    value = (resource.get("Properties") or {}).get("InstanceType")
    if isinstance(value, dict) and "Ref" in value:
        value = ((document.get("Parameters") or {}).get(value["Ref"]) or {}).get("Default")
    if not isinstance(value, str):
        raise ConfigError(f"cannot tell an instance's type from the template ({value!r})")
    return value


def _ref(value: Any) -> str | None:
    return str(value["Ref"]) if isinstance(value, dict) and "Ref" in value else None
