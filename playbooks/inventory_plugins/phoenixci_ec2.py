"""phoenixci_ec2: the hosts of one phoenixci run, read from the EC2 API.

Instances tagged ``phoenixci:run-id`` = ``run_id`` (pending or running) become hosts, grouped
by their ``phoenixci:role`` tag (``ci-server`` → group ``ci_server``). It works against any
endpoint (AWS, the local cloud, LocalStack): credentials and region come from the usual
AWS environment, ``endpoint_url`` from the file or ``AWS_ENDPOINT_URL``.

phoenixci ships this instead of ``amazon.aws.aws_ec2`` so that the host needs ansible-core
alone (~40 MB) rather than the full ``ansible`` package (~580 MB); see docs/architecture.md.
"""
from __future__ import annotations

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

DOCUMENTATION = r"""
name: phoenixci_ec2
short_description: the EC2 instances of one phoenixci run
description:
  - Lists instances tagged phoenixci:run-id=RUN_ID through the EC2 API (any endpoint) and groups
    them by their phoenixci:role tag. Hosts are named after their role when it is unique
    (ci-server, ci-agent), else after the instance id.
options:
  plugin:
    description: Must be phoenixci_ec2.
    required: true
    choices: [phoenixci_ec2]
  run_id:
    description: The run whose instances to list.
    required: true
    type: str
  region:
    description: AWS region.
    type: str
    env: [{name: AWS_REGION}, {name: AWS_DEFAULT_REGION}]
  endpoint_url:
    description: EC2 API endpoint; empty for AWS.
    type: str
    default: ''
    env: [{name: AWS_ENDPOINT_URL}]
  ssh_user:
    description: Login user of the image.
    type: str
    default: admin
  ssh_private_key_file:
    description: Private key of the run's key pair.
    type: path
  known_hosts_file:
    description: Pinned host keys of the run's instances (never accept unknown keys).
    type: path
"""

RUN_TAG = "phoenixci:run-id"
ROLE_TAG = "phoenixci:role"


class InventoryModule(BaseInventoryPlugin):
    NAME = "phoenixci_ec2"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("phoenixci_ec2.yml", "phoenixci_ec2.yaml"))

    def parse(self, inventory, loader, path, cache=True):  # type: ignore[no-untyped-def]
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        run_id = self.get_option("run_id")
        endpoint = self.get_option("endpoint_url") or None
        where = endpoint or f"AWS {self.get_option('region')}"
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as e:
            raise AnsibleParserError("phoenixci_ec2 needs boto3 in Ansible's Python") from e
        try:
            ec2 = boto3.client("ec2", region_name=self.get_option("region"), endpoint_url=endpoint)
            pages = ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": f"tag:{RUN_TAG}", "Values": [run_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]}])
            instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        except (BotoCoreError, ClientError) as e:
            raise AnsibleParserError(f"phoenixci_ec2: cannot list the instances of run {run_id} at {where}: {e}") from e
        if not instances:
            raise AnsibleParserError(
                f"phoenixci_ec2: no running instance is tagged {RUN_TAG}={run_id} at {where}: is the "
                f"infrastructure stack phoenixci-{run_id} up? (phoenixci up creates it)")
        by_role: dict[str, list[dict]] = {}
        for inst in instances:
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            by_role.setdefault(tags.get(ROLE_TAG, "untagged"), []).append(inst)
        for role, members in sorted(by_role.items()):
            group = self.inventory.add_group(role.replace("-", "_"))
            for inst in sorted(members, key=lambda i: i["InstanceId"]):
                name = role if len(members) == 1 and role != "untagged" else inst["InstanceId"]
                self.inventory.add_host(name, group=group)
                self._host_vars(name, inst, role)

    def _host_vars(self, name: str, inst: dict, role: str) -> None:
        private = inst.get("PrivateIpAddress", "")
        public = inst.get("PublicIpAddress", "")
        values = {
            "ansible_host": public or private,
            "ansible_user": self.get_option("ssh_user"),
            "ec2_instance_id": inst["InstanceId"],
            "ec2_private_ip_address": private,
            "ec2_public_ip_address": public,
            "phoenixci_role": role,
        }
        key = self.get_option("ssh_private_key_file")
        if key:
            values["ansible_ssh_private_key_file"] = key
        known = self.get_option("known_hosts_file")
        if known:
            values["ansible_ssh_common_args"] = (
                f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null")
        for var, value in values.items():
            self.inventory.set_variable(name, var, value)


