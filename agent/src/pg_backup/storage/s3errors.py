"""S3 failures as the agent's errors: one line naming the action, the object and the endpoint, with a
hint; never credentials. Outages that outlasted the window (:mod:`.outage`) say how long they were
waited out."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from ..errors import NotFoundError, PgBackupError, StorageError
from .outage import OutageExceeded, StorageUnreachable, certificate_problem


@contextlib.contextmanager
def translated(bucket: str, where: str, endpoint: str, action: str, key: Optional[str]) -> Iterator[None]:
    """Every boto3 failure inside the block becomes one clear StorageError line (never with credentials);
    ``where`` is the s3:// address of the object or bucket, ``key`` None for a request on the bucket."""
    from botocore import exceptions as bx

    waited = ""
    try:
        try:
            yield
        except OutageExceeded as outage:
            waited = f" for {outage.waited:.0f} s"
            raise outage.last from None
    except (NotFoundError, StorageError, FileExistsError):
        raise
    except bx.ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        if code in ("NoSuchKey", "404", "NotFound") and key is not None:
            raise NotFoundError(f"object {where} does not exist") from None
        if code == "NoSuchBucket" or (key is None and code in ("404", "NotFound")):
            raise StorageError(f"bucket {bucket} does not exist at {endpoint}",
                               hint="create it (the bucket role does) or fix repository.s3.bucket") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise StorageError(f"{action} {where} refused by {endpoint}: {code}",
                               hint="check the credentials and the IAM policy of this host") from None
        raise StorageError(f"{action} {where} failed at {endpoint}{waited}: {code} "
                           f"{err.get('Message', '')}".rstrip()) from None
    except bx.NoCredentialsError:
        raise StorageError(f"no S3 credentials for {endpoint}",
                           hint="set repository.s3.credentials_file or give the host an IAM role") from None
    except bx.SSLError as exc:
        problem = certificate_problem(exc)
        if problem is None:
            raise StorageUnreachable(f"storage unreachable{waited}: {action} {where} at {endpoint}: TLS connection "
                               f"failed", hint="check the network and the store") from None
        raise StorageError(f"TLS certificate of {endpoint} not trusted: {problem}",
                           hint="set repository.s3.ca_bundle to the CA that signed the endpoint's certificate "
                                "(and check the host name in endpoint_url)") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
            bx.ConnectionClosedError, bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError) as exc:
        inner = getattr(exc, "kwargs", {}).get("error")
        if isinstance(inner, PgBackupError):  # e.g. Interrupted by a signal inside the HTTP client
            raise inner from None
        raise StorageUnreachable(f"storage unreachable{waited}: {action} {where} at {endpoint}: "
                                 f"{exc.__class__.__name__}",
                                 hint="check repository.s3.endpoint_url, the network and the store "
                                      "(repository.s3.outage_tolerance_seconds: how long an outage is waited out)"
                                 ) from None
    except bx.BotoCoreError as exc:
        inner = getattr(exc, "kwargs", {}).get("error")
        if isinstance(inner, PgBackupError):  # e.g. Interrupted by a signal inside the HTTP client
            raise inner from None
        raise StorageError(f"{action} {where} failed at {endpoint}: {exc}") from None

