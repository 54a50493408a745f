"""S3 Object Lock as the agent reports it (the compliance report): the bucket's configuration, read with
GetObjectLockConfiguration; each object's mode and retain-until date come with HeadObject."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

#: What stores answer for a bucket without Object Lock (or without the API).
NO_LOCK = ("ObjectLockConfigurationNotFoundError", "NotImplemented", "MethodNotAllowed")


def object_lock_configuration(request: Callable[[], Any]) -> Optional[Dict[str, object]]:
    """``request`` performs GetObjectLockConfiguration. None without Object Lock; ``enabled`` None with an
    ``error`` when the credentials may not read it (the report says so rather than failing)."""
    from botocore.exceptions import ClientError

    try:
        conf = request().get("ObjectLockConfiguration") or {}
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in NO_LOCK:
            return None
        if code in ("AccessDenied", "403"):
            return {"enabled": None,
                    "error": "not readable with these credentials (they lack s3:GetBucketObjectLockConfiguration)"}
        raise
    if conf.get("ObjectLockEnabled") != "Enabled":
        return None
    default = (conf.get("Rule") or {}).get("DefaultRetention") or {}
    # moto answers Years: 0 beside Days (and the reverse): 0 means "not set".
    return {"enabled": True, "mode": default.get("Mode"), "days": default.get("Days") or None,
            "years": default.get("Years") or None}
