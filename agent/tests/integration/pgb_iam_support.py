"""An S3 endpoint that enforces IAM: moto_server with one IAM user per duty, each holding the policy
document the bucket role generates for that duty (plugins/module_utils/bucket_policy.py, which the
role's bucket_policies filter calls).

- ``render_policies(bucket, prefix, clusters)``: {duty: policy document} for the cluster(s).
- ``for_moto(document)``: moto evaluates no S3 condition keys (an Allow with a Condition is denied
  outright), so statements with conditions are reduced to what moto can check: an Allow keeps its
  actions and resources without the condition, a conditional Deny is left out. The conditions
  themselves are checked by the policy unit tests (tests/unit), not here. moto also names the
  HeadBucket action s3:HeadBucket where AWS authorises it as s3:ListBucket (added where ListBucket
  is), and authorises a bulk delete (DeleteObjects) as s3:DeleteObject on the bucket where AWS checks
  each key (the bucket is added where s3:DeleteObject is allowed: in moto the pruner may then delete
  any key; the per-cluster resources are checked by the unit tests).
- ``IamS3``: starts the server, creates the bucket, the users and their credentials files (0600, owned
  by the cluster's OS user), then switches enforcement on (``/moto-api/reset-auth`` with 0: every
  request from then on needs an IAM user's signature and that user's policy).
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from conftest import MotoServer, make_pg_dir, write_pg_file

DUTIES = ("writer", "pruner", "restorer")
POLICY_MODULE = Path(__file__).resolve().parents[3] / "plugins" / "module_utils" / "bucket_policy.py"


def render_policies(bucket: str, prefix: str = "", clusters: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    """{duty: document} for one cluster, made by the same code the bucket role's filter calls."""
    spec = importlib.util.spec_from_file_location("pgb_bucket_policy", POLICY_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    docs = module.documents(bucket, prefix, clusters=clusters or [])
    assert len({d["duty"] for d in docs}) == len(docs), "one cluster: one document per duty"
    return {d["duty"]: d["document"] for d in docs}


def for_moto(document: Dict[str, Any]) -> Dict[str, Any]:
    statements = []
    for st in document["Statement"]:
        if "Condition" in st:
            if st["Effect"] == "Deny":
                continue
            st = {k: v for k, v in st.items() if k != "Condition"}
        actions = [st["Action"]] if isinstance(st["Action"], str) else list(st["Action"])
        if "s3:ListBucket" in actions:  # AWS authorises HeadBucket as s3:ListBucket; moto names it s3:HeadBucket
            st = dict(st, Action=actions + ["s3:HeadBucket"])
        if "s3:DeleteObject" in actions and st["Effect"] == "Allow":  # DeleteObjects: AWS per key, moto per bucket
            resources = [st["Resource"]] if isinstance(st["Resource"], str) else list(st["Resource"])
            st = dict(st, Resource=resources + [resources[0].split("/", 1)[0]])
        statements.append(st)
    return dict(document, Statement=statements)


class IamS3:
    def __init__(self, directory: Path, clusters: List[str], prefix: str = ""):
        self.dir = make_pg_dir(directory, 0o700)
        self.server = MotoServer(self.dir)
        self.bucket = f"pgb-iam-{secrets.token_hex(4)}"
        self.prefix = prefix
        self.clusters = clusters
        self.credentials: Dict[str, str] = {}

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def start(self) -> "IamS3":
        self.server.start()
        self.server.create_bucket(self.bucket)
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name=self.server.region,
                           aws_access_key_id=self.server.access_key, aws_secret_access_key=self.server.secret_key)
        for duty, document in render_policies(self.bucket, self.prefix, self.clusters).items():
            iam.create_user(UserName=f"pg-backup-{duty}")
            iam.put_user_policy(UserName=f"pg-backup-{duty}", PolicyName=f"pg-backup-{duty}",
                                PolicyDocument=json.dumps(for_moto(document)))
            key = iam.create_access_key(UserName=f"pg-backup-{duty}")["AccessKey"]
            self.credentials[duty] = str(write_pg_file(
                self.dir / f"s3-{duty}",
                f"[default]\naws_access_key_id = {key['AccessKeyId']}\n"
                f"aws_secret_access_key = {key['SecretAccessKey']}\n", 0o600))
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10).close()
        return self

    def stop(self) -> None:
        self.server.stop()

    def repository(self, **duties: Optional[str]) -> Dict[str, Any]:
        """repository.s3 settings with the given duty -> duty-whose-credentials mapping, e.g.
        ``repository(writer="writer", pruner="pruner")`` for a database host, or
        ``repository(restorer="writer")`` for a restore with the writer's credentials."""
        return {"type": "s3", "prefix": self.prefix, "s3": {
            "bucket": self.bucket, "endpoint_url": self.endpoint_url, "region": self.server.region,
            "force_path_style": True, "max_attempts": 1, "outage_tolerance_seconds": 0,
            "credentials": {duty: self.credentials[whose] for duty, whose in duties.items() if whose}}}


def no_proxy_env() -> Dict[str, str]:
    return {"NO_PROXY": os.environ.get("NO_PROXY", "127.0.0.1,localhost"), "AWS_EC2_METADATA_DISABLED": "true"}
