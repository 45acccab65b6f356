"""Which API requests wake the reconciler (api_changes.py): all but plain reads, and moto still
gets the body it was sent."""
from __future__ import annotations

import io
from typing import Any

import pytest

from phoenixci.localcloud.api_changes import ChangeNotifier, may_change

pytestmark = pytest.mark.unit

FORM = "application/x-www-form-urlencoded; charset=utf-8"


def environ(method: str = "POST", body: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": "/", "QUERY_STRING": "", "CONTENT_TYPE": FORM,
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), **extra}


@pytest.mark.parametrize(("env", "changes"), [
    (environ(body=b"Action=RunInstances&Version=2016-11-15&ImageId=ami-1"), True),
    (environ(body=b"Action=TerminateInstances&InstanceId.1=i-1"), True),
    (environ(body=b"Action=AuthorizeSecurityGroupIngress&GroupId=sg-1"), True),
    (environ(body=b"Action=CreateStack&StackName=s"), True),
    (environ(body=b"Action=DescribeInstances&Version=2016-11-15"), False),
    (environ(body=b"Action=GetConsoleOutput&InstanceId=i-1"), False),
    (environ(body=b"Action=ListUsers"), False),
    (environ(QUERY_STRING="Action=DescribeRegions"), False),
    (environ(HTTP_X_AMZ_TARGET="DynamoDB_20120810.ListTables", CONTENT_TYPE="application/x-amz-json-1.0"), False),
    (environ(HTTP_X_AMZ_TARGET="AmazonSSM.PutParameter", CONTENT_TYPE="application/x-amz-json-1.1"), True),
    (environ("GET", PATH_INFO="/bucket/key"), False),
    (environ("HEAD", PATH_INFO="/bucket"), False),
    (environ("PUT", b"object bytes", PATH_INFO="/bucket/key", CONTENT_TYPE="text/plain"), True),
    (environ(body=b"no action here"), True),  # unknown: counts as a change
])
def test_reads_do_not_wake_the_reconciler_everything_else_does(env: dict[str, Any], changes: bool) -> None:
    assert may_change(env) is changes


def test_moto_reads_the_same_body_and_the_change_is_told_after_it_answered() -> None:
    seen: list[str] = []
    body = b"Action=RunInstances&MinCount=1"

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append("app:" + env["wsgi.input"].read(int(env["CONTENT_LENGTH"])).decode())
        return [b"ok"]

    wrapped = ChangeNotifier(app, lambda: seen.append("changed"))
    assert wrapped(environ(body=body), lambda *a: None) == [b"ok"]
    assert seen == ["app:" + body.decode(), "changed"]
    assert wrapped(environ(body=b"Action=DescribeInstances"), lambda *a: None) == [b"ok"]
    assert seen[-1] == "app:Action=DescribeInstances"
