"""ARNs that the local cloud authorises each request against (patches/resource_arns.py)."""
from __future__ import annotations

import pytest

from phoenixci.localcloud.patches.resource_arns import flat_params, indexed, resource_arns

pytestmark = pytest.mark.unit

R, A = "eu-west-1", "123456789012"
STACK_ID = f"arn:aws:cloudformation:{R}:{A}:stack/app-x/0f1e2d3c-aaaa-bbbb-cccc-000000000000"


class FakeLookup:
    def stack_arn(self, name: str) -> str | None:
        return STACK_ID if name == "app-x" else None

    def allocation_for_association(self, association_id: str) -> str | None:
        return {"eipassoc-1": "eipalloc-1"}.get(association_id)

    def allocation_for_ip(self, public_ip: str) -> str | None:
        return {"127.0.0.9": "eipalloc-9"}.get(public_ip)


def arns(service: str, action: str, **params: str) -> list[str] | None:
    return resource_arns(service, action, params, R, A, FakeLookup())


def ec2(kind: str, ident: str) -> str:
    return f"arn:aws:ec2:{R}:{A}:{kind}/{ident}"


@pytest.mark.parametrize("action", ["CreateStack", "DeleteStack", "UpdateStack", "DescribeStacks",
                                    "DescribeStackEvents", "DescribeStackResources",
                                    "DescribeStackResource", "GetTemplate"])
def test_stack_actions_use_new_stack_arn(action: str) -> None:
    assert arns("cloudformation", action, StackName="app-new") == [
        f"arn:aws:cloudformation:{R}:{A}:stack/app-new/*"]


def test_existing_stack_uses_its_real_id() -> None:
    assert arns("cloudformation", "DeleteStack", StackName="app-x") == [STACK_ID]


def test_stack_arn_passed_through() -> None:
    other = f"arn:aws:cloudformation:{R}:{A}:stack/infra/1234"
    assert arns("cloudformation", "DescribeStackEvents", StackName=other) == [other]


@pytest.mark.parametrize("action", ["DescribeStacks", "DescribeStackResources"])
def test_stack_actions_without_name_are_star(action: str) -> None:
    assert arns("cloudformation", action) == ["*"]


@pytest.mark.parametrize("action", ["ListStacks", "ValidateTemplate", "ListExports"])
def test_unmapped_cloudformation_actions_keep_moto_default(action: str) -> None:
    assert arns("cloudformation", action) is None


def test_associate_address_covers_eip_instance_and_nic() -> None:
    assert arns("ec2", "AssociateAddress", AllocationId="eipalloc-1", InstanceId="i-1",
                NetworkInterfaceId="eni-1") == [
        ec2("elastic-ip", "eipalloc-1"), ec2("instance", "i-1"), ec2("network-interface", "eni-1")]


def test_associate_address_by_public_ip_is_looked_up() -> None:
    assert arns("ec2", "AssociateAddress", PublicIp="127.0.0.9", InstanceId="i-1") == [
        ec2("elastic-ip", "eipalloc-9"), ec2("instance", "i-1")]


def test_disassociate_looks_up_allocation() -> None:
    assert arns("ec2", "DisassociateAddress", AssociationId="eipassoc-1") == [
        ec2("elastic-ip", "eipalloc-1")]
    assert arns("ec2", "DisassociateAddress", AssociationId="eipassoc-unknown") == [
        ec2("elastic-ip", "*")]


def test_release_address() -> None:
    assert arns("ec2", "ReleaseAddress", AllocationId="eipalloc-3") == [ec2("elastic-ip", "eipalloc-3")]


@pytest.mark.parametrize("action", ["TerminateInstances", "StopInstances", "StartInstances",
                                    "RebootInstances"])
def test_instance_list_actions_cover_every_instance(action: str) -> None:
    params = {"InstanceId.2": "i-b", "InstanceId.1": "i-a", "InstanceId.10": "i-c"}
    assert resource_arns("ec2", action, params, R, A) == [
        ec2("instance", "i-a"), ec2("instance", "i-b"), ec2("instance", "i-c")]


def test_run_instances_resources() -> None:
    got = arns("ec2", "RunInstances", ImageId="ami-1", SubnetId="subnet-1", KeyName="ci",
               **{"SecurityGroupId.1": "sg-1", "SecurityGroupId.2": "sg-2"})
    assert got == [ec2("instance", "*"), f"arn:aws:ec2:{R}::image/ami-1", ec2("subnet", "subnet-1"),
                   ec2("security-group", "sg-1"), ec2("security-group", "sg-2"),
                   ec2("key-pair", "ci"), ec2("network-interface", "*"), ec2("volume", "*")]


def test_run_instances_network_interface_subnets_and_groups() -> None:
    got = arns("ec2", "RunInstances", ImageId="ami-1", **{
        "NetworkInterface.1.SubnetId": "subnet-9", "NetworkInterface.1.SecurityGroupId.1": "sg-9"})
    assert ec2("subnet", "subnet-9") in got and ec2("security-group", "sg-9") in got


@pytest.mark.parametrize("action", ["DescribeInstances", "DescribeAddresses", "AllocateAddress",
                                    "CreateSecurityGroup"])
def test_unmapped_ec2_actions_keep_moto_default(action: str) -> None:
    assert arns("ec2", action) is None


def test_other_services_unmapped() -> None:
    assert arns("sqs", "SendMessage", QueueUrl="x") is None


def test_china_partition() -> None:
    assert resource_arns("ec2", "ReleaseAddress", {"AllocationId": "e"}, "cn-north-1", A) == [
        f"arn:aws-cn:ec2:cn-north-1:{A}:elastic-ip/e"]


def test_param_helpers() -> None:
    assert flat_params({"A": ["1", "2"], "B": [], "C": "3"}) == {"A": "1", "C": "3"}
    assert indexed({"X.1": "a", "X.1.Y": "no", "XX.2": "no"}, "X") == ["a"]
