"""Encryption in transit, proven: the agent against an S3 endpoint over HTTPS with a private CA
(repository.s3.ca_bundle), and against PostgreSQL over TLS with postgres.sslmode verify-full and
postgres.sslrootcert -- a certificate from another CA fails with one clear line."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
from pathlib import Path
from typing import List, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import MotoServer, give_to_pg_user, make_pg_dir
from pgb_pitr_support import sql_on, stop
from pgb_wal_support import enable_archiving, switch_segments, wait_archived

pytestmark = pytest.mark.integration


# -- a private PKI ---------------------------------------------------------------------------------

class CA:
    def __init__(self, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, directory: Path, stem: str, dns: List[str], ips: List[str] = ()) -> Tuple[str, str]:
        """A server certificate and key (PEM files owned by postgres, the key 0600)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        give_to_pg_user(cert_file, 0o644)
        give_to_pg_user(key_file, 0o600)
        return str(cert_file), str(key_file)

    def bundle(self, path: Path) -> str:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        give_to_pg_user(path, 0o644)
        return str(path)


@pytest.fixture(scope="module")
def pki(pg_test_base):
    directory = make_pg_dir(pg_test_base / f"pki-{os.getpid()}", 0o755)
    ours, other = CA("pg-backup test CA"), CA("some other CA")
    return {"dir": directory, "ca": ours, "ca_file": ours.bundle(directory / "ca.pem"),
            "other_ca_file": other.bundle(directory / "other-ca.pem")}


@pytest.fixture(scope="module")
def https_s3(pki):
    directory = make_pg_dir(pki["dir"] / "moto", 0o700)
    cert, key = pki["ca"].issue(directory, "s3", ["localhost"])
    server = MotoServer(directory, tls=(cert, key, pki["ca_file"])).start()
    yield server
    server.stop()


def _s3(https_s3, pki, **overrides):
    bucket = https_s3.create_bucket(f"tls-{os.urandom(3).hex()}")
    return dict({"bucket": bucket, "ca_bundle": pki["ca_file"]}, **overrides)


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len([line for line in lines if "error:" in line]) == 1 and "Traceback" not in result.stderr, result.stderr
    return next(line for line in lines if "error:" in line)


# -- S3 over HTTPS ---------------------------------------------------------------------------------

def test_backup_wal_restore_and_pitr_over_https_with_a_private_ca(make_cluster, https_s3, pki, workdir,
                                                                   write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "tls", cluster=cluster, s3=https_s3, s3_overrides=_s3(https_s3, pki),
                       physical={"checkpoint": "fast"}, backup={"globals": False})
    assert https_s3.endpoint_url.startswith("https://localhost:")
    enable_archiving(cluster, cfg)
    cluster.psql("CREATE DATABASE app")
    cluster.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g", dbname="app")
    logical = run_agent(cfg, "backup", "--tier", "daily", "--database", "app")
    assert "warning" not in logical.stderr, logical.stderr
    physical = run_agent(cfg, "backup", "--physical").data["backup_id"]
    cluster.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(5001, 5100) g", dbname="app")
    cluster.psql("SELECT pg_create_restore_point('tls-point')")
    cluster.psql("INSERT INTO t SELECT g, 'too late' FROM generate_series(5101, 5200) g", dbname="app")
    wait_archived(cluster, switch_segments(cluster, 1)[0])

    run_agent(cfg, "verify", "--all", "--deep")
    run_agent(cfg, "restore", logical.data["backup_id"], "--database", "app", "--target-database", "app2")
    assert cluster.psql("SELECT count(*) FROM t", dbname="app2") == "5000"

    data_dir = workdir / "pitr-data"
    from conftest import free_port

    port = free_port()
    try:
        run_agent(cfg, "pitr", "--backup-id", physical, "--target-name", "tls-point", "--data-dir", str(data_dir),
                  "--port", str(port), timeout=300)
        assert sql_on(port, "SELECT count(*), max(id) FROM t", dbname="app") == (5100, 5100)
    finally:
        stop(str(data_dir))
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.parametrize("case", ["other-ca", "system-cas", "wrong-host"])
def test_a_certificate_that_is_not_trusted_fails_with_one_line(pg15, https_s3, pki, workdir, write_config,
                                                              run_agent, case):
    overrides = _s3(https_s3, pki)
    endpoint = https_s3.endpoint_url
    if case == "other-ca":
        overrides["ca_bundle"] = pki["other_ca_file"]
    elif case == "system-cas":
        overrides["ca_bundle"] = None
    else:   # a certificate of our CA, but for another name (it names localhost only)
        endpoint = https_s3.endpoint_url.replace("localhost", "127.0.0.1")
        overrides["endpoint_url"] = endpoint
    cfg = write_config(workdir, "badtls", cluster=pg15, s3=https_s3, s3_overrides=overrides,
                       backup={"globals": False})
    for args in (["backup", "--tier", "daily", "--database", "postgres"], ["list"]):
        result = run_agent(cfg, *args, check=False, json=False, timeout=120)
        assert result.rc == 5, result.describe()
        line = _error_line(result)
        assert f"TLS certificate of {endpoint} not trusted:" in line, line
        expected = ("match", "127.0.0.1") if case == "wrong-host" else ("unable to get local issuer certificate",)
        assert all(word in line.lower() for word in expected), line


def test_verify_tls_false_warns_on_every_run_and_in_health(pg15, https_s3, pki, workdir, write_config, run_agent):
    cfg = write_config(workdir, "notls", cluster=pg15, s3=https_s3, backup={"globals": False},
                       s3_overrides=_s3(https_s3, pki, ca_bundle=None, verify_tls=False))
    for args in (["backup", "--tier", "daily", "--database", "postgres"], ["list"]):
        result = run_agent(cfg, *args)
        warnings = [line for line in result.stderr.splitlines() if "verify_tls is false" in line]
        assert len(warnings) == 1 and https_s3.endpoint_url in warnings[0], result.stderr
    health = run_agent(cfg, "health", check=False)
    checks = {c["name"]: c for c in health.data["checks"]}
    assert checks["storage_tls"]["status"] == "warning", checks
    assert checks["storage"]["status"] == "ok"


# -- PostgreSQL over TLS -----------------------------------------------------------------------------

@pytest.fixture
def tls_cluster(make_cluster, pki):
    directory = make_pg_dir(pki["dir"] / f"pg-{os.urandom(3).hex()}", 0o700)
    cert, key = pki["ca"].issue(directory, "server", ["localhost"])
    cluster = make_cluster("15", ssl=True, ssl_cert_file=cert, ssl_key_file=key, archive_mode="on",
                           archive_command="", wal_level="replica")
    hba = cluster.datadir / "pg_hba.conf"
    rules = ("local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n"
             "host all all 127.0.0.1/32 reject\nhost replication all 127.0.0.1/32 reject\n")
    hba.write_text(rules)
    give_to_pg_user(hba, 0o600)
    cluster.psql("SELECT pg_reload_conf()")
    return cluster


def test_postgres_connections_use_verify_full_with_the_private_ca(tls_cluster, pki, workdir, write_config, run_agent):
    cluster = tls_cluster
    cluster.psql("CREATE DATABASE tlsdb")
    cluster.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id", dbname="tlsdb")
    good = {"host": "localhost", "sslmode": "verify-full", "sslrootcert": pki["ca_file"]}
    cfg = write_config(workdir, "pgtls", cluster=cluster, postgres=good, backup={"globals": False},
                       physical={"checkpoint": "fast"})
    enable_archiving(cluster, cfg)
    logical = run_agent(cfg, "backup", "--tier", "daily", "--database", "tlsdb").data["backup_id"]
    run_agent(cfg, "backup", "--physical")                      # the replication connection too
    run_agent(cfg, "restore", logical, "--database", "tlsdb", "--target-database", "tlsdb2")
    assert cluster.psql("SELECT count(*) FROM t", dbname="tlsdb2") == "1000"
    # pg_hba.conf rejects every TCP connection without TLS: that these worked proves TLS was used.
    plain = write_config(workdir, "pgtls", cluster=cluster, config_name="plain.yml",
                         postgres=dict(good, sslmode="disable"), backup={"globals": False})
    assert run_agent(plain, "backup", "--tier", "daily", "--database", "tlsdb", check=False, json=False).rc == 6

    for postgres, expected in (({"sslrootcert": pki["other_ca_file"]}, "certificate verify failed"),
                               ({"host": "127.0.0.1"}, "does not match host name")):
        bad_cfg = write_config(workdir, "pgtls", cluster=cluster, config_name="bad.yml",
                               postgres=dict(good, **postgres), backup={"globals": False})
        for args in (["backup", "--tier", "daily", "--database", "tlsdb"], ["backup", "--physical"]):
            result = run_agent(bad_cfg, *args, check=False, json=False)
            assert result.rc == 6, result.describe()
            line = _error_line(result)
            assert expected in line and ("localhost" in line or "127.0.0.1" in line), line
