"""The templates' least-privilege roles, enforced by the embedded AWS as AWS would.

Each test acts with the role's own credentials (what the IMDS hands an instance).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from phoenixci import stacks
from phoenixci.errors import StackError
from phoenixci.harness import Infrastructure
from phoenixci.templates import load_template

pytestmark = pytest.mark.integration

REVISION = "0123456789abcdef0123456789abcdef01234567"
SHA = "a" * 64


def denied(call: Any, *args: Any, **kwargs: Any) -> str:
    """Assert the call is refused for lack of permission; return the error code."""
    __tracebackhide__ = True
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    code = info.value.response["Error"]["Code"]
    assert code in {"AccessDenied", "UnauthorizedOperation", "AccessDeniedException"}, info.value
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return str(code)


@pytest.fixture(scope="module")
def app_role(phoenix_backend: Any, scratch_infra: Infrastructure) -> Any:
    return phoenix_backend.instance_role_session(scratch_infra.stack.outputs["AppRoleArn"], "app-test")


@pytest.fixture(scope="module")
def agent_role(phoenix_backend: Any, scratch_infra: Infrastructure) -> Any:
    return phoenix_backend.instance_role_session(scratch_infra.stack.outputs["AgentRoleArn"], "agent-test")


@pytest.fixture(scope="module")
def artifact(phoenix_backend: Any, scratch_infra: Infrastructure) -> Iterator[tuple[str, str]]:
    s3 = phoenix_backend.client("s3")
    bucket = scratch_infra.stack.outputs["ArtifactBucket"]
    s3.put_object(Bucket=bucket, Key="app/r1/app.tar.gz", Body=b"artifact")
    s3.put_object(Bucket=bucket, Key="other/secret.txt", Body=b"secret")
    yield bucket, "app/r1/app.tar.gz"
    stacks.empty_bucket(s3, bucket)


def app_params(infra: Infrastructure, **override: str) -> dict[str, str]:
    out, params = infra.stack.outputs, infra.stack.parameters
    values = {"Revision": REVISION, "RunId": infra.run_id, "ArtifactBucket": out["ArtifactBucket"],
              "ArtifactKey": f"app/{REVISION}/app.tar.gz", "ArtifactSha256": SHA,
              "ImageId": params["ImageId"], "KeyName": params["KeyName"], "SubnetId": out["SubnetId"],
              "SecurityGroupId": out["AppSecurityGroupId"], "InstanceProfile": out["AppInstanceProfile"]}
    values.update(override)
    return values


class TestAppRole:
    def test_reads_app_objects(self, phoenix_backend: Any, app_role: Any, artifact: tuple[str, str]) -> None:
        bucket, key = artifact
        s3 = phoenix_backend.client("s3", app_role)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"artifact"

    def test_cannot_write_or_delete(self, phoenix_backend: Any, app_role: Any, artifact: tuple[str, str]) -> None:
        bucket, key = artifact
        s3 = phoenix_backend.client("s3", app_role)
        denied(s3.put_object, Bucket=bucket, Key="app/r1/evil.tar.gz", Body=b"x")
        denied(s3.put_object, Bucket=bucket, Key=key, Body=b"overwrite")
        denied(s3.delete_object, Bucket=bucket, Key=key)

    def test_cannot_read_outside_app(self, phoenix_backend: Any, app_role: Any, artifact: tuple[str, str]) -> None:
        bucket, _ = artifact
        denied(phoenix_backend.client("s3", app_role).get_object, Bucket=bucket, Key="other/secret.txt")

    def test_cannot_touch_stacks(self, phoenix_backend: Any, app_role: Any, scratch_infra: Infrastructure) -> None:
        cfn = phoenix_backend.client("cloudformation", app_role)
        denied(cfn.delete_stack, StackName=scratch_infra.stack.name)


class TestAgentRole:
    def test_publishes_app_objects(self, phoenix_backend: Any, agent_role: Any, artifact: tuple[str, str]) -> None:
        bucket, _ = artifact
        s3 = phoenix_backend.client("s3", agent_role)
        s3.put_object(Bucket=bucket, Key="app/r2/app.tar.gz", Body=b"new")
        denied(s3.put_object, Bucket=bucket, Key="other/x", Body=b"x")

    def test_creates_and_deletes_app_stacks(self, phoenix_backend: Any, agent_role: Any,
                                            scratch_infra: Infrastructure) -> None:
        cfn = phoenix_backend.client("cloudformation", agent_role)
        s3 = phoenix_backend.client("s3", agent_role)
        stack = stacks.create(cfn, s3, "app-x", load_template("app-server"), app_params(scratch_infra),
                              run_id=scratch_infra.run_id)
        assert stack.status == "CREATE_COMPLETE"
        instance_id = stack.output("InstanceId")
        ec2 = phoenix_backend.client("ec2")
        inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        assert inst["IamInstanceProfile"]["Arn"].endswith("/" + scratch_infra.stack.outputs["AppInstanceProfile"])
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [scratch_infra.stack.outputs["AppSecurityGroupId"]]
        stacks.delete(cfn, s3, "app-x")
        assert stacks.describe(cfn, "app-x") is None
        inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] == "terminated"

    def test_cannot_delete_the_infrastructure(self, phoenix_backend: Any, agent_role: Any,
                                              scratch_infra: Infrastructure) -> None:
        cfn = phoenix_backend.client("cloudformation", agent_role)
        denied(cfn.delete_stack, StackName=scratch_infra.stack.name)
        assert stacks.describe(phoenix_backend.client("cloudformation"), scratch_infra.stack.name).status \
            == "CREATE_COMPLETE"

    def test_cannot_create_stacks_not_named_app(self, phoenix_backend: Any, agent_role: Any,
                                                scratch_infra: Infrastructure) -> None:
        cfn = phoenix_backend.client("cloudformation", agent_role)
        denied(cfn.create_stack, StackName="web-x", TemplateBody=load_template("app-server").body,
               Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in app_params(scratch_infra).items()])

    def test_cannot_pass_another_role(self, phoenix_backend: Any, agent_role: Any,
                                      scratch_infra: Infrastructure) -> None:
        cfn = phoenix_backend.client("cloudformation", agent_role)
        s3 = phoenix_backend.client("s3", agent_role)
        ec2 = phoenix_backend.client("ec2")
        running_before = _running(ec2)
        params = app_params(scratch_infra, InstanceProfile=scratch_infra.stack.outputs["AgentInstanceProfile"])
        with pytest.raises(StackError) as info:
            stacks.create(cfn, s3, "app-y", load_template("app-server"), params, run_id=scratch_infra.run_id)
        assert "PassRole" in str(info.value)
        assert stacks.describe(phoenix_backend.client("cloudformation"), "app-y") is None
        assert _running(ec2) == running_before

    def test_cannot_pass_another_role_to_run_instances(self, phoenix_backend: Any, agent_role: Any,
                                                       scratch_infra: Infrastructure) -> None:
        out, params = scratch_infra.stack.outputs, scratch_infra.stack.parameters
        ec2 = phoenix_backend.client("ec2", agent_role)
        running_before = _running(phoenix_backend.client("ec2"))
        denied(ec2.run_instances, ImageId=params["ImageId"], MinCount=1, MaxCount=1, SubnetId=out["SubnetId"],
               SecurityGroupIds=[out["AppSecurityGroupId"]],
               IamInstanceProfile={"Name": out["AgentInstanceProfile"]})
        assert _running(phoenix_backend.client("ec2")) == running_before

    def test_moves_only_the_app_address(self, phoenix_backend: Any, agent_role: Any,
                                        scratch_infra: Infrastructure) -> None:
        out = scratch_infra.stack.outputs
        ec2 = phoenix_backend.client("ec2", agent_role)
        ec2.associate_address(AllocationId=out["AppEipAllocationId"], InstanceId=out["CiAgentInstanceId"])
        try:
            ci_alloc = [a for a in ec2.describe_addresses()["Addresses"]
                        if a["PublicIp"] == out["CiServerPublicIp"]][0]["AllocationId"]
            denied(ec2.associate_address, AllocationId=ci_alloc, InstanceId=out["CiAgentInstanceId"],
                   AllowReassociation=True)
        finally:
            assoc = ec2.describe_addresses(AllocationIds=[out["AppEipAllocationId"]])["Addresses"][0]
            ec2.disassociate_address(AssociationId=assoc["AssociationId"])
        assert not ec2.describe_addresses(AllocationIds=[out["AppEipAllocationId"]])["Addresses"][0].get("InstanceId")


class TestAgentActsOnlyOnItsAppServers:
    """From where an attacker stands: a build step with the agent role's credentials (the agent's IMDS)."""

    def test_cannot_terminate_or_start_the_ci_hosts(self, phoenix_backend: Any, agent_role: Any,
                                                    scratch_infra: Infrastructure) -> None:
        out = scratch_infra.stack.outputs
        ec2 = phoenix_backend.client("ec2", agent_role)
        for host in (out["CiServerInstanceId"], out["CiAgentInstanceId"]):
            denied(ec2.terminate_instances, InstanceIds=[host])
            denied(ec2.start_instances, InstanceIds=[host])
        assert {out["CiServerInstanceId"], out["CiAgentInstanceId"]} <= _running(phoenix_backend.client("ec2"))

    def test_cannot_retag_the_ci_server_into_scope(self, phoenix_backend: Any, agent_role: Any,
                                                   scratch_infra: Infrastructure) -> None:
        server = scratch_infra.stack.outputs["CiServerInstanceId"]
        ec2 = phoenix_backend.client("ec2", agent_role)
        denied(ec2.create_tags, Resources=[server], Tags=[{"Key": "phoenixci:role", "Value": "app"}])
        denied(ec2.delete_tags, Resources=[server], Tags=[{"Key": "phoenixci:role"}])
        tags = {t["Key"]: t["Value"] for t in phoenix_backend.client("ec2").describe_tags(
            Filters=[{"Name": "resource-id", "Values": [server]}])["Tags"]}
        assert tags["phoenixci:role"] == "ci-server"
        denied(ec2.terminate_instances, InstanceIds=[server])

    def test_launches_only_app_servers_of_its_run(self, phoenix_backend: Any, agent_role: Any,
                                                  scratch_infra: Infrastructure) -> None:
        out, params = scratch_infra.stack.outputs, scratch_infra.stack.parameters
        ec2 = phoenix_backend.client("ec2", agent_role)
        before = _running(phoenix_backend.client("ec2"))
        for role, run in (("ci-server", scratch_infra.run_id), ("app", "another-run"), (None, None)):
            tags = [{"Key": k, "Value": v} for k, v in (("phoenixci:role", role), ("phoenixci:run-id", run)) if v]
            denied(ec2.run_instances, ImageId=params["ImageId"], MinCount=1, MaxCount=1, SubnetId=out["SubnetId"],
                   SecurityGroupIds=[out["AppSecurityGroupId"]],
                   TagSpecifications=[{"ResourceType": "instance", "Tags": tags}] if tags else [])
        assert _running(phoenix_backend.client("ec2")) == before

    def test_cannot_terminate_an_app_server_of_another_run(self, phoenix_backend: Any, agent_role: Any,
                                                           scratch_infra: Infrastructure) -> None:
        params = scratch_infra.stack.parameters
        admin = phoenix_backend.client("ec2")
        other = admin.run_instances(ImageId=params["ImageId"], MinCount=1, MaxCount=1, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "phoenixci:role", "Value": "app"},
                                                  {"Key": "phoenixci:run-id", "Value": "another-run"}]}],
                                    )["Instances"][0]["InstanceId"]
        try:
            denied(phoenix_backend.client("ec2", agent_role).terminate_instances, InstanceIds=[other])
            assert other in _running(admin)
        finally:
            admin.terminate_instances(InstanceIds=[other])

    def test_deploys_and_retires_an_app_server(self, phoenix_backend: Any, agent_role: Any,
                                               scratch_infra: Infrastructure) -> None:
        """The stack's own operations run as the agent: launch tagged at launch, then terminate."""
        cfn = phoenix_backend.client("cloudformation", agent_role)
        s3 = phoenix_backend.client("s3", agent_role)
        stack = stacks.create(cfn, s3, "app-z", load_template("app-server"), app_params(scratch_infra),
                              run_id=scratch_infra.run_id)
        instance_id = stack.output("InstanceId")
        assert instance_id in _running(phoenix_backend.client("ec2"))
        stacks.delete(cfn, s3, "app-z")
        assert instance_id not in _running(phoenix_backend.client("ec2"))
        denied(cfn.create_stack, StackName="app-untagged", TemplateBody=load_template("app-server").body,
               Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in app_params(scratch_infra).items()])


def _running(ec2: Any) -> set[str]:
    return {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] in {"pending", "running"}}


def test_agent_reads_its_own_infrastructure_stack_only(agent_role: Any, phoenix_backend: Any,
                                                      scratch_infra: Infrastructure) -> None:
    """The pipeline's deploy step reads the bucket, subnet and groups from the infrastructure
    stack's outputs: DescribeStacks on that one stack, and no other stack outside app-*."""
    cfn = phoenix_backend.client("cloudformation", agent_role)
    found = cfn.describe_stacks(StackName=scratch_infra.stack.name)["Stacks"]
    assert found[0]["Outputs"]
    denied(cfn.describe_stacks, StackName="phoenixci-someone-else")
    denied(cfn.delete_stack, StackName=scratch_infra.stack.name)


def test_agent_reads_consoles_the_app_role_does_not(agent_role: Any, app_role: Any, phoenix_backend: Any,
                                                    scratch_infra: Infrastructure) -> None:
    """A failed release's console is saved by the deploy step before its stack is deleted."""
    server = scratch_infra.stack.outputs["CiServerInstanceId"]
    out = phoenix_backend.client("ec2", agent_role).get_console_output(InstanceId=server)
    assert out["InstanceId"] == server
    denied(phoenix_backend.client("ec2", app_role).get_console_output, InstanceId=server)
