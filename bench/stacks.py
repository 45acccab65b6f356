"""Benchmark: the embedded AWS (moto://) start-up and the infrastructure stack's lifecycle.

Prints JSON: API start to first authenticated call, infrastructure stack create and delete
(p50/max over N runs), an app stack create/delete, and the process's resident memory.
Usage: python bench/stacks.py [--runs N]
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phoenixci import harness, leaks, stacks  # noqa: E402
from phoenixci.backends import get_backend  # noqa: E402
from phoenixci.templates import load_template  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("moto").setLevel(logging.ERROR)

    t0 = time.perf_counter()
    backend = get_backend("moto://")
    backend.start()
    backend.check_credentials()
    api_start = time.perf_counter() - t0
    create, delete, app_create, app_delete = [], [], [], []
    try:
        cfn, s3 = backend.client("cloudformation"), backend.client("s3")
        for i in range(args.runs):
            run_id = f"bench-{i}"
            with tempfile.TemporaryDirectory() as tmp, \
                    harness.key_pair(backend.client("ec2"), run_id, Path(tmp)) as key:
                params = {"RunId": run_id, "AdminCidr": "127.0.0.1/32", "KeyName": key.name,
                          "ImageId": harness.default_image_id(backend.client("ec2"))}
                t = time.perf_counter()
                infra = stacks.create(cfn, s3, harness.infra_stack_name(run_id), load_template("infrastructure"),
                                      params, run_id=run_id)
                create.append(time.perf_counter() - t)
                out = infra.outputs
                app_params = {"Revision": "f" * 40, "RunId": run_id, "ArtifactBucket": out["ArtifactBucket"],
                              "ArtifactKey": "app/x.tar.gz", "ArtifactSha256": "0" * 64,
                              "ImageId": params["ImageId"], "KeyName": key.name, "SubnetId": out["SubnetId"],
                              "SecurityGroupId": out["AppSecurityGroupId"],
                              "InstanceProfile": out["AppInstanceProfile"]}
                t = time.perf_counter()
                stacks.create(cfn, s3, f"app-bench-{i}", load_template("app-server"), app_params, run_id=run_id)
                app_create.append(time.perf_counter() - t)
                t = time.perf_counter()
                stacks.delete(cfn, s3, f"app-bench-{i}")
                app_delete.append(time.perf_counter() - t)
                t = time.perf_counter()
                stacks.delete(cfn, s3, infra.name)
                delete.append(time.perf_counter() - t)
            left = leaks.leftovers(backend, run_id)
            if left:
                raise SystemExit(f"leak: {left}")
    finally:
        backend.stop()

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}

    print(json.dumps({
        "benchmark": "stacks", "backend": "moto://", "runs": args.runs,
        "api_start_to_first_call_s": round(api_start, 3),
        "infra_create_s": summary(create), "infra_delete_s": summary(delete),
        "app_stack_create_s": summary(app_create), "app_stack_delete_s": summary(app_delete),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "leftovers": 0,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
