"""The ``repository`` section of the configuration: a local directory or an S3-compatible bucket.

Part of the one schema (:class:`pg_backup.config.Settings`). Only this module (with ``storage/``)
knows what the backend type means for the rest of the agent (e.g.
:meth:`RepositorySettings.storage_class_for`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .config_options import opt, section


TIERS = ("daily", "weekly", "monthly")


@dataclass
class StorageClassSettings:
    daily: str = opt("STANDARD", "S3 storage class for daily backups.")
    weekly: str = opt("STANDARD", "S3 storage class for weekly backups.")
    monthly: str = opt("STANDARD", "S3 storage class for monthly backups (e.g. GLACIER or DEEP_ARCHIVE for "
                       "7-year archives; the agent restores archived objects itself).")


S3_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR",
                      "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY")


@dataclass
class S3CredentialsSettings:
    writer: Optional[str] = opt(None, "Credentials file (0600, AWS ini) of the writer duty: backup, wal-push, "
                                "wal-check, erasure. Database hosts hold it.", secret_file=True)
    pruner: Optional[str] = opt(None, "Credentials file (0600) of the pruner duty: prune only.", secret_file=True)
    restorer: Optional[str] = opt(None, "Credentials file (0600) of the restorer duty: restore, pitr, wal-fetch, "
                                  "verify, drill. The playbooks deliver it for a job's duration only.",
                                  secret_file=True)


@dataclass
class S3Settings:
    bucket: Optional[str] = opt(None, "Bucket name (required when repository.type is s3).")
    endpoint_url: Optional[str] = opt(None, "Endpoint for S3-compatible stores (MinIO, Ceph RGW, ...); empty for AWS.",
                                      example="https://minio.internal:9000")
    region: Optional[str] = opt(None, "Region of the bucket; also checked against the bucket's real region "
                                "(data locality).", example="eu-central-1")
    force_path_style: bool = opt(False, "Use path-style addressing (MinIO and most non-AWS stores need it).")
    verify_tls: bool = opt(True, "Verify the endpoint's TLS certificate (and host name). false is for "
                           "tests only: every run and `health` warn about it.")
    ca_bundle: Optional[str] = opt(None, "CA bundle (PEM) to verify the endpoint's certificate with, e.g. a "
                                   "private CA; empty uses the system's CAs.", example="/etc/pg-backup/s3-ca.pem")
    credentials_file: Optional[str] = opt(None, "AWS-style credentials file (mode 0600) with aws_access_key_id and "
                                          "aws_secret_access_key; empty uses the instance/IAM role or the "
                                          "standard AWS environment.", secret_file=True)
    profile: Optional[str] = opt(None, "Profile within credentials_file.")
    credentials: S3CredentialsSettings = section(S3CredentialsSettings, "Least privilege: one credentials file per "
                                                 "duty; each command uses its duty's file (else credentials_file). "
                                                 "list, show and health use the first one set.")
    sse: str = opt("none", "Server-side encryption requested on every object, in addition to the agent's own "
                   "client-side encryption.", choices=("none", "AES256", "aws:kms"))
    sse_kms_key_id: Optional[str] = opt(None, "KMS key id when sse is aws:kms.")
    storage_class: StorageClassSettings = section(StorageClassSettings, "Storage class per backup tier.")
    part_size_mib: int = opt(8, "Multipart part size. The agent's memory is about 60 MiB plus 5 x part size at "
                             "the default concurrency; parts grow only for objects beyond 2,000 parts.",
                             minimum=5, maximum=5120)
    max_concurrency: int = opt(2, "Parts uploaded in parallel.", minimum=1, maximum=16)
    max_attempts: int = opt(3, "Attempts per request inside the S3 client (quick retries of throttling and "
                            "server errors); a store that stays unreachable is then waited out for "
                            "outage_tolerance_seconds.", minimum=1, maximum=50)
    outage_tolerance_seconds: int = opt(300, "How long a storage outage is ridden out: a request that fails "
                                        "(connection refused or cut, timeout, 5xx) is retried with backoff until "
                                        "this many seconds have passed since it first failed; a multipart upload "
                                        "resumes from the parts already stored. Beyond it the command fails with "
                                        "exit 5 and commits nothing. 0 fails at the first outage.",
                                        minimum=0, maximum=86400)
    wal_push_outage_tolerance_seconds: int = opt(15, "The same for wal-push (archive_command): kept short because "
                                                 "PostgreSQL's archiver retries a failed push itself (three "
                                                 "times a second apart, then at the next segment or within "
                                                 "a minute), and a push that waits holds the archiver.",
                                                 minimum=0, maximum=3600)
    connect_timeout: int = opt(10, "Seconds to connect to the endpoint.", minimum=1, maximum=600)
    read_timeout: int = opt(120, "Seconds to wait for a response.", minimum=1, maximum=3600)
    restore_tier: str = opt("Standard", "Retrieval tier for objects in GLACIER/DEEP_ARCHIVE.",
                            choices=("Expedited", "Standard", "Bulk"))
    restore_days: int = opt(3, "Days a retrieved archived object stays readable.", minimum=1, maximum=365)
    restore_poll_seconds: int = opt(60, "Seconds between checks while an archived object is being retrieved.",
                                    minimum=1, maximum=3600)
    restore_timeout_hours: int = opt(60, "Give up waiting for archived objects after this many hours.",
                                     minimum=1, maximum=24 * 14)


@dataclass
class RepositorySettings:
    type: str = opt("local", "Where backups go.", choices=("local", "s3"))
    path: Optional[str] = opt(None, "Root directory of a local repository (required when type is local).",
                              example="/var/backups/pg-backup")
    prefix: str = opt("", "Key prefix inside the bucket or directory, before <cluster>/.")
    s3: S3Settings = section(S3Settings, "S3-compatible object storage.")

    def identity(self) -> Dict[str, Any]:
        """What tells this repository apart from every other one (not options, not secrets): local
        state kept per repository, such as the WAL spool's markers, starts afresh for a new bucket
        or directory."""
        where: Dict[str, Any] = {"type": self.type, "prefix": self.prefix}
        if self.type == "local":
            where["path"] = os.path.abspath(self.path or "")
        else:
            where.update(bucket=self.s3.bucket, endpoint=self.s3.endpoint_url or "")
        return where

    def storage_class_for(self, tier: str) -> Optional[str]:
        """The storage class of a tier's data objects; None where the backend has no classes (local)."""
        return getattr(self.s3.storage_class, tier) if self.type == "s3" else None

    def required_region(self) -> Optional[str]:
        """The region the bucket must be in (data locality, checked by health); None for a local
        repository or when no region is configured."""
        return self.s3.region if self.type == "s3" else None

    def problems(self, *, check_files: bool) -> List[str]:
        """Rules across the repository's fields (a backend's required options, the prefix)."""
        problems: List[str] = []
        if self.type == "local":
            if not self.path:
                problems.append("repository.path: required when repository.type is local")
            elif not os.path.isabs(self.path):
                problems.append(f"repository.path: must be an absolute path, got {self.path!r}")
        else:
            s3 = self.s3
            if not s3.bucket:
                problems.append("repository.s3.bucket: required when repository.type is s3")
            if s3.sse == "aws:kms" and not s3.sse_kms_key_id:
                problems.append("repository.s3.sse_kms_key_id: required when repository.s3.sse is aws:kms")
            for tier in TIERS:
                sc = getattr(s3.storage_class, tier)
                if sc not in S3_STORAGE_CLASSES:
                    problems.append(f"repository.s3.storage_class.{tier}: {sc!r} is not one of "
                                    f"{', '.join(S3_STORAGE_CLASSES)}")
            if s3.endpoint_url and not re.match(r"^https?://", s3.endpoint_url):
                problems.append(f"repository.s3.endpoint_url: must start with http:// or https://, "
                                f"got {s3.endpoint_url!r}")
            if check_files and s3.ca_bundle and not os.path.isfile(s3.ca_bundle):
                problems.append(f"repository.s3.ca_bundle: file {s3.ca_bundle} does not exist")
        if self.prefix and (self.prefix.startswith("/") or ".." in self.prefix.split("/")):
            problems.append(f"repository.prefix: must be relative without '..', got {self.prefix!r}")
        return problems
