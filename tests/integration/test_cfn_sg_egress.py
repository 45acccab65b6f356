"""patches/cfn_sg_egress.py: a CloudFormation security group's SecurityGroupEgress replaces the
default allow-all egress, as on AWS (AWS::EC2::SecurityGroup, "SecurityGroupEgress"); and plain
moto still drops it (when this fails, upstream fixed it: remove the patch)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phoenixci.localcloud import patches
from phoenixci.localcloud.secgroups import ALL_OUTBOUND, Rule, from_moto

pytestmark = pytest.mark.integration  # moto in subprocesses (~3 s each)

ACCOUNT, REGION = "000000000042", "us-east-1"  # an account of its own: moto's state is per process
TEMPLATE_EGRESS = [
    {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"},
    {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "CidrIp": "10.0.0.0/16"},
    {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "DestinationSecurityGroupId": "@DB@"},
]

SCENARIO = """
import json, sys
from moto.ec2.models import ec2_backends
from moto.ec2.models.security_groups import SecurityGroup
account, region, egress = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
backend = ec2_backends[account][region]
vpc = backend.create_vpc("10.0.0.0/16")
db = backend.create_security_group("db", "db", vpc_id=vpc.id)
egress = [dict(r, DestinationSecurityGroupId=db.id) if "DestinationSecurityGroupId" in r else r for r in egress]
props = {"GroupDescription": "web", "VpcId": vpc.id, "SecurityGroupEgress": egress}
group = SecurityGroup.create_from_cloudformation_json("Web", {"Properties": props}, account, region)
print(json.dumps({"db": db.id, "egress": [[r.ip_protocol, r.from_port, r.to_port, r.ip_range, r.source_group]
                                          for r in group.egress_rules]}))
"""


def _run(patched: bool) -> dict:
    prelude = "from phoenixci.localcloud import patches; patches.apply()\n" if patched else ""
    out = subprocess.run([sys.executable, "-c", prelude + SCENARIO, ACCOUNT, REGION, json.dumps(TEMPLATE_EGRESS)],
                         capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_template_egress_replaces_the_default() -> None:
    got = _run(patched=True)
    assert got["egress"] == [["tcp", 443, 443, {"CidrIp": "0.0.0.0/0"}, {}],
                             ["udp", 53, 53, {"CidrIp": "10.0.0.0/16"}, {}],
                             ["tcp", 5432, 5432, {}, {"GroupId": got["db"], "OwnerId": ACCOUNT, "UserId": ACCOUNT}]]


def test_the_egress_read_back_is_what_is_enforced() -> None:
    patches.apply()
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.security_groups import SecurityGroup

    backend = ec2_backends[ACCOUNT][REGION]
    vpc = backend.create_vpc("10.1.0.0/16")
    props = {"GroupDescription": "all out", "VpcId": vpc.id,
             "SecurityGroupEgress": [{"IpProtocol": "-1", "CidrIp": "0.0.0.0/0"}]}
    group = SecurityGroup.create_from_cloudformation_json("AllOut", {"Properties": props}, ACCOUNT, REGION)
    assert from_moto(group).egress == [ALL_OUTBOUND]
    plain = SecurityGroup.create_from_cloudformation_json(
        "Plain", {"Properties": {"GroupDescription": "x", "VpcId": vpc.id}}, ACCOUNT, REGION)
    assert from_moto(plain).egress == [Rule("-1", -1, -1, ["0.0.0.0/0"])]  # no property: the default


def test_upstream_moto_still_drops_template_egress() -> None:
    assert _run(patched=False)["egress"] == [["-1", None, None, {"CidrIp": "0.0.0.0/0"}, {}]], \
        "upstream moto now applies SecurityGroupEgress in CloudFormation: remove patches/cfn_sg_egress.py"
