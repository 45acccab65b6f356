"""CloudFormation buckets get the properties AWS applies.

moto 5.2.5's ``FakeBucket.create_from_cloudformation_json`` applies only BucketEncryption
and Tags: ``VersioningConfiguration``, ``PublicAccessBlockConfiguration`` and
``OwnershipControls`` are silently dropped, so a template asking for a versioned, private
bucket gets neither (and the GetBucketVersioning / GetPublicAccessBlock APIs say so).

AWS behaviour restored: those three properties are put on the bucket when the stack
creates it. Hook: ``moto.s3.models.FakeBucket.create_from_cloudformation_json`` (wrapped).
"""
from __future__ import annotations

from typing import Any

from phoenixci.localcloud.patches import require

MARK = "_phoenixci_cfn_bucket"


def _bucket_cls() -> Any:
    from moto.s3.models import FakeBucket

    return FakeBucket


def check() -> None:
    from moto.s3.models import S3Backend

    require(_bucket_cls(), "create_from_cloudformation_json")
    for name in ("put_bucket_versioning", "put_public_access_block", "put_bucket_ownership_controls"):
        require(S3Backend, name)


def apply_properties(backend: Any, bucket_name: str, properties: dict[str, Any]) -> None:
    """Put the template's versioning, public access block and ownership on the bucket."""
    versioning = properties.get("VersioningConfiguration") or {}
    if versioning.get("Status"):
        backend.put_bucket_versioning(bucket_name, versioning["Status"])
    block = properties.get("PublicAccessBlockConfiguration")
    if block:
        backend.put_public_access_block(bucket_name, {k: str(v).lower() for k, v in block.items()})
    rules = (properties.get("OwnershipControls") or {}).get("Rules") or []
    if rules and rules[0].get("ObjectOwnership"):
        backend.put_bucket_ownership_controls(bucket_name, ownership=rules[0]["ObjectOwnership"])


def install() -> None:
    bucket_cls = _bucket_cls()
    original = bucket_cls.__dict__["create_from_cloudformation_json"].__func__
    if getattr(original, MARK, False):
        return

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        from moto.s3.models import s3_backends
        from moto.utilities.utils import get_partition

        bucket = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = s3_backends[account_id][get_partition(region_name)]
        apply_properties(backend, bucket.name, cloudformation_json.get("Properties", {}))
        return bucket

    setattr(create_from_cloudformation_json, MARK, True)
    bucket_cls.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)
