"""The phoenix deploy and retire, orchestrated against the embedded AWS as the agent role.

Servers do not boot here (that comes with the local cloud), so the health gate is injected:
each test decides what the new server would answer. Everything else is real: stacks,
Elastic IP moves and IAM enforcement of the agent role's least privilege.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from phoenixci import stacks
from phoenixci.errors import ConfigError, DeployError, HealthCheckError
from phoenixci.harness import Infrastructure
from phoenixci.pipeline.deploy import Environment, deploy, eip_holder
from phoenixci.pipeline.health import Target
from phoenixci.pipeline.retire import app_stack_name

pytestmark = pytest.mark.integration

SHA = "b" * 64


def rev(n: int) -> str:
    return f"{n:040x}"


class Health:
    """An injected health gate that records what it was asked and answers as told."""

    def __init__(self) -> None:
        self.unhealthy: set[str] = set()
        self.calls: list[Target] = []

    def __call__(self, target: Target, timeout: float) -> None:
        self.calls.append(target)
        if target.revision in self.unhealthy:
            raise HealthCheckError(f"{target.instance_id} answered /health 503", last_state=503)


@pytest.fixture(scope="module")
def agent(phoenix_backend: Any, scratch_infra: Infrastructure) -> dict[str, Any]:
    session = phoenix_backend.instance_role_session(scratch_infra.stack.outputs["AgentRoleArn"], "deploy-test")
    return {name: phoenix_backend.client(name, session) for name in ("cloudformation", "ec2", "s3")}


@pytest.fixture(scope="module")
def env(scratch_infra: Infrastructure) -> Environment:
    return Environment.from_infra_stack(scratch_infra.stack)


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture(scope="module", autouse=True)
def no_app_stacks_left(phoenix_backend: Any, scratch_infra: Infrastructure) -> Iterator[None]:
    yield
    cfn, s3 = phoenix_backend.client("cloudformation"), phoenix_backend.client("s3")
    for stack in stacks.list_stacks(cfn, prefix="app-", run_id=scratch_infra.run_id):
        stacks.delete(cfn, s3, stack.name)


def run(agent: dict[str, Any], env: Environment, revision: str, health: Health) -> Any:
    return deploy(agent["cloudformation"], agent["ec2"], agent["s3"], env, revision=revision,
                  artifact_key=f"app/{revision}/app-{revision}.tar.gz", artifact_sha256=SHA,
                  health_check=health, health_timeout=5, stack_timeout=60)


def app_stacks(phoenix_backend: Any, run_id: str) -> list[str]:
    return [s.name for s in stacks.list_stacks(phoenix_backend.client("cloudformation"), prefix="app-",
                                               run_id=run_id)]


def test_phoenix_sequence(phoenix_backend: Any, scratch_infra: Infrastructure, agent: dict[str, Any],
                          env: Environment, health: Health) -> None:
    ec2 = phoenix_backend.client("ec2")
    before = eip_holder(ec2, env.eip_allocation_id)[0]
    first = run(agent, env, rev(1), health)
    assert first.previous_instance_id == before
    assert eip_holder(ec2, env.eip_allocation_id)[0] == first.instance_id
    assert first.public_ip == scratch_infra.stack.outputs["AppPublicIp"]
    assert [c.instance_id for c in health.calls] == [first.instance_id]
    assert health.calls[0].revision == rev(1) and health.calls[0].port == 8080

    second = run(agent, env, rev(2), health)
    assert second.instance_id != first.instance_id, "every release gets a brand-new server"
    assert second.previous_instance_id == first.instance_id
    assert eip_holder(ec2, env.eip_allocation_id) == (second.instance_id, first.public_ip)
    assert second.retired == [app_stack_name(rev(1))]
    assert app_stacks(phoenix_backend, scratch_infra.run_id) == [app_stack_name(rev(2))]
    old = ec2.describe_instances(InstanceIds=[first.instance_id])["Reservations"][0]["Instances"][0]
    assert old["State"]["Name"] == "terminated"

    again = run(agent, env, rev(2), health)
    assert again.already_live and again.instance_id == second.instance_id


def test_failed_health_gate_keeps_the_old_server(phoenix_backend: Any, scratch_infra: Infrastructure,
                                                 agent: dict[str, Any], env: Environment,
                                                 health: Health) -> None:
    ec2 = phoenix_backend.client("ec2")
    live = run(agent, env, rev(3), health)
    health.unhealthy.add(rev(4))
    with pytest.raises(DeployError) as info:
        run(agent, env, rev(4), health)
    message = str(info.value)
    assert rev(4) in message and live.instance_id in message and "keeps serving" in message
    assert isinstance(info.value.__cause__, HealthCheckError)
    assert eip_holder(ec2, env.eip_allocation_id)[0] == live.instance_id
    assert app_stacks(phoenix_backend, scratch_infra.run_id) == [app_stack_name(rev(3))]
    state = ec2.describe_instances(InstanceIds=[live.instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"
    probed = health.calls[-1].instance_id
    gone = ec2.describe_instances(InstanceIds=[probed])["Reservations"][0]["Instances"][0]
    assert gone["State"]["Name"] == "terminated", "the failed new server must not be left running"


def test_failed_stack_leaves_nothing_and_old_server_serves(phoenix_backend: Any, scratch_infra: Infrastructure,
                                                           agent: dict[str, Any], env: Environment,
                                                           health: Health) -> None:
    ec2 = phoenix_backend.client("ec2")
    live = run(agent, env, rev(5), health)
    bad = Environment(**{**env.__dict__, "instance_profile": scratch_infra.stack.outputs["AgentInstanceProfile"]})
    with pytest.raises(DeployError, match="PassRole"):
        run(agent, bad, rev(6), health)
    assert eip_holder(ec2, env.eip_allocation_id)[0] == live.instance_id
    assert app_stacks(phoenix_backend, scratch_infra.run_id) == [app_stack_name(rev(5))]
    # the next run does not trip over a ROLLBACK_COMPLETE leftover
    assert run(agent, env, rev(6), health).previous_instance_id == live.instance_id


def test_bad_revision_is_refused_before_any_change(agent: dict[str, Any], env: Environment, health: Health) -> None:
    with pytest.raises(ConfigError, match="not a full 40-character git sha"):
        run(agent, env, "main", health)
    assert health.calls == []
