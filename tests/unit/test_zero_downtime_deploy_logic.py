"""deploy() after the move: the address check (auto | http | none), the undo when the address
never serves the new revision, and the drain before retiring — with fakes, no network."""
from __future__ import annotations

from typing import Any

import pytest

from phoenixci import stacks, util
from phoenixci.errors import ConfigError, DeployError, HealthCheckError
from phoenixci.pipeline import deploy as deploy_mod
from phoenixci.pipeline import health
from phoenixci.pipeline.deploy import DEFAULT_DRAIN, Environment, deploy
from phoenixci.pipeline.health import AddressCheckError, Observation, address_check_mode
from phoenixci.pipeline.retire import RetireResult

pytestmark = pytest.mark.unit

REV = "a" * 40
OLD_REV = "b" * 40
SHA = "c" * 64
LOCAL_EIP = "127.31.7.9"
PUBLIC_EIP = "198.51.100.7"  # TEST-NET-2: only ever handed to the fake probe

ENV = Environment(run_id="r1", artifact_bucket="bucket", image_id="ami-1", key_name="key",
                  subnet_id="subnet-1", security_group_id="sg-1", instance_profile="app",
                  eip_allocation_id="eipalloc-1")


class World:
    """Fake EC2 + CloudFormation + probe, recording every step in order."""

    def __init__(self, public_ip: str, holder: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
        self.public_ip, self.holder = public_ip, holder
        self.events: list[tuple[Any, ...]] = []
        self.probes: list[str] = []
        self.lag = 0            # probes that still see the old server after the move
        self.never = False      # the address never serves the new server
        world = self

        class Stack:
            def output(self, key: str) -> str:
                assert key == "InstanceId"
                return "i-new"

        def create(cfn: Any, s3: Any, name: str, *args: Any, **kwargs: Any) -> Stack:
            world.events.append(("create", name))
            return Stack()

        def delete(cfn: Any, s3: Any, name: str, **kwargs: Any) -> None:
            world.events.append(("delete", name))

        def retire(cfn: Any, s3: Any, *, keep: str, run_id: str, timeout: float) -> RetireResult:
            world.events.append(("retire", keep))
            return RetireResult(kept=keep, retired=["app-" + OLD_REV])

        def probe(address: str, port: int, *, timeout: float = 3.0) -> Observation:
            world.probes.append(address)
            serving_new = world.holder == "i-new" and not world.never and len(world.probes) > world.lag
            return Observation(200, {"revision": REV if serving_new else OLD_REV})

        monkeypatch.setattr(stacks, "describe", lambda cfn, name: None)
        monkeypatch.setattr(stacks, "create", create)
        monkeypatch.setattr(stacks, "delete", delete)
        monkeypatch.setattr(deploy_mod, "retire", retire)
        monkeypatch.setattr(deploy_mod, "_sleep", lambda s: world.events.append(("drain", s)))
        monkeypatch.setattr(health, "probe", probe)
        monkeypatch.setattr(health, "wait_until",
                            lambda check, **kw: util.wait_until(check, **{**kw, "interval": 0.01}))

    # -- the EC2 client ----------------------------------------------------------------------
    def describe_addresses(self, AllocationIds: list[str]) -> dict[str, Any]:  # noqa: N803
        addr = {"AllocationId": AllocationIds[0], "PublicIp": self.public_ip}
        if self.holder:
            addr.update(InstanceId=self.holder, AssociationId="eipassoc-1")
        return {"Addresses": [addr]}

    def associate_address(self, AllocationId: str, InstanceId: str, AllowReassociation: bool) -> None:  # noqa: N803
        self.events.append(("move", InstanceId))
        self.holder = InstanceId

    def disassociate_address(self, AssociationId: str) -> None:  # noqa: N803
        self.events.append(("disassociate",))
        self.holder = None

    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803
        return {"Reservations": [{"Instances": [{"PrivateIpAddress": "10.0.0.9"}]}]}

    def get_console_output(self, InstanceId: str, Latest: bool) -> dict[str, Any]:  # noqa: N803
        self.events.append(("console", InstanceId))
        lines = [f"boot line {n}" for n in range(100)] + ["phoenixapp-bootstrap: FAILED: no artifact"]
        return {"InstanceId": InstanceId, "Output": "\n".join(lines)}


def healthy(target: Any, timeout: float) -> None:
    pass


def run(world: World, **kwargs: Any) -> deploy_mod.DeployResult:
    return deploy(None, world, None, ENV, revision=REV, artifact_key=f"app/{REV}/app.tar.gz",
                  artifact_sha256=SHA, health_check=healthy, template=object(),  # type: ignore[arg-type]
                  **kwargs)


def test_auto_never_probes_a_loopback_address_and_drains_before_retiring(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(LOCAL_EIP, "i-old", monkeypatch)
    result = run(world)
    assert world.probes == [], "auto must never probe 127.0.0.0/8"
    assert world.events == [("create", f"app-{REV}"), ("move", "i-new"), ("drain", DEFAULT_DRAIN),
                            ("retire", f"app-{REV}")]
    assert (result.address_check, result.drained, result.previous_instance_id) == ("none", DEFAULT_DRAIN, "i-old")


def test_auto_probes_a_public_address_until_it_serves_the_new_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(PUBLIC_EIP, "i-old", monkeypatch)
    world.lag = 3  # AWS applies the association with a delay
    result = run(world, drain=2.5)
    assert world.probes == [PUBLIC_EIP] * 4
    assert world.events == [("create", f"app-{REV}"), ("move", "i-new"), ("drain", 2.5), ("retire", f"app-{REV}")]
    assert result.address_check == "http" and result.drained == 2.5


def test_address_never_serving_moves_it_back_and_deletes_the_new_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(PUBLIC_EIP, "i-old", monkeypatch)
    world.never = True
    with pytest.raises(DeployError, match="i-old keeps serving") as info:
        run(world, address_timeout=0.05)
    assert isinstance(info.value.__cause__, AddressCheckError)
    assert PUBLIC_EIP in str(info.value) and REV in str(info.value)
    assert world.events == [("create", f"app-{REV}"), ("move", "i-new"), ("console", "i-new"), ("move", "i-old"),
                            ("delete", f"app-{REV}")], "no drain, no retire: the old server keeps serving"
    assert world.holder == "i-old"


def test_a_failed_release_keeps_its_console_before_the_stack_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(LOCAL_EIP, "i-old", monkeypatch)

    def unhealthy(target: Any, timeout: float) -> None:
        raise HealthCheckError("never healthy", last_state=None)

    with pytest.raises(DeployError) as info:
        deploy(None, world, None, ENV, revision=REV, artifact_key=f"app/{REV}/app.tar.gz",  # type: ignore[arg-type]
               artifact_sha256=SHA, health_check=unhealthy, template=object())  # type: ignore[arg-type]
    assert world.events.index(("console", "i-new")) < world.events.index(("delete", f"app-{REV}"))
    assert info.value.console.endswith("phoenixapp-bootstrap: FAILED: no artifact")
    assert len(info.value.console.splitlines()) == 60


def test_first_release_timeout_leaves_the_address_unassociated(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(PUBLIC_EIP, None, monkeypatch)
    world.never = True
    with pytest.raises(DeployError, match="nothing keeps serving"):
        run(world, address_timeout=0.05)
    assert world.events[-2:] == [("disassociate",), ("delete", f"app-{REV}")]
    assert world.holder is None


def test_first_release_has_nothing_to_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(LOCAL_EIP, None, monkeypatch)
    result = run(world)
    assert ("drain", DEFAULT_DRAIN) not in world.events and result.drained == 0.0
    assert world.events[-1] == ("retire", f"app-{REV}")


def test_explicit_http_probes_even_a_loopback_address(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(LOCAL_EIP, "i-old", monkeypatch)
    assert run(world, address_check="http", drain=0).address_check == "http"
    assert world.probes == [LOCAL_EIP]
    assert not [e for e in world.events if e[0] == "drain"], "drain=0 does not wait"


def test_none_trusts_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(PUBLIC_EIP, "i-old", monkeypatch)
    assert run(world, address_check="none").address_check == "none"
    assert world.probes == []


@pytest.mark.parametrize("kwargs, message", [({"address_check": "ping"}, "address check 'ping'"),
                                              ({"drain": -1.0}, "drain"),
                                              ({"address_timeout": 0.0}, "address timeout")])
def test_bad_options_are_refused_before_any_change(monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any],
                                                   message: str) -> None:
    world = World(PUBLIC_EIP, "i-old", monkeypatch)
    with pytest.raises(ConfigError, match=message):
        run(world, **kwargs)
    assert world.events == [] and world.probes == []


@pytest.mark.parametrize("mode, address, resolved", [
    ("auto", "127.0.0.1", "none"), ("auto", "127.200.3.4", "none"), ("auto", "198.51.100.7", "http"),
    ("auto", "app.example.com", "http"), ("http", "127.200.3.4", "http"), ("none", "198.51.100.7", "none")])
def test_address_check_mode(mode: str, address: str, resolved: str) -> None:
    assert address_check_mode(mode, address) == resolved


def test_cli_deploy_options() -> None:
    from phoenixci.cli import build_parser

    base = ["deploy", "--infra-stack", "s", "--revision", REV, "--artifact-key", "k", "--sha256", SHA]
    args = build_parser().parse_args(base)
    assert (args.address_check, args.address_timeout, args.drain) == ("auto", 120.0, DEFAULT_DRAIN)
    args = build_parser().parse_args([*base, "--address-check", "http", "--address-timeout", "30", "--drain", "0"])
    assert (args.address_check, args.address_timeout, args.drain) == ("http", 30.0, 0.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--address-check", "ping"])


class _Console:
    def __init__(self, *outputs: object) -> None:
        self.outputs, self.reads = list(outputs), 0

    def get_console_output(self, **kwargs: object) -> dict:
        self.reads += 1
        out = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
        if isinstance(out, Exception):
            raise out
        return {"Output": out}


def test_bootstrap_failure_reads_the_consoles_failed_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    from phoenixci.pipeline import deploy as deploy_mod

    clock = [100.0]
    monkeypatch.setattr(deploy_mod.time, "monotonic", lambda: clock[0])
    denied = ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "GetConsoleOutput")
    console = _Console(denied, "boot\nphoenixapp-bootstrap: fetching s3://b/k\n",
                       "x\nphoenixapp-bootstrap: FAILED: phoenixapp.service keeps exiting (restarted 3 times)\n")
    gave_up = deploy_mod.bootstrap_failure(console, "i-1", every=3.0)
    assert gave_up() == ""            # unreadable: not a failure
    assert gave_up() == "" and console.reads == 1   # read at most every 3 s
    clock[0] += 3
    assert gave_up() == ""            # no FAILED line yet
    clock[0] += 3
    assert gave_up() == "its bootstrap failed: phoenixapp.service keeps exiting (restarted 3 times)"
    assert console.reads == 3
