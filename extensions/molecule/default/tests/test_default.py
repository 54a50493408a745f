"""Verify the default scenario: files the roles wrote, the bucket's settings and lifecycle rules (bucket
role), the backup that side_effect took, in the bucket, and that miometry.pg_backup.backup_checksum passes
for it. Runs on the control node (which is also the
database host: local connection)."""

import os

import boto3
import pytest
import testinfra.utils.ansible_runner

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("pg_backup")


def var(host, name):
    """A templated inventory variable (host.ansible.get_variables() does not template)."""
    return host.ansible("ansible.builtin.debug", f"var={name}", check=False)[name]


@pytest.fixture(scope="module")
def cluster(host):
    clusters = var(host, "agent_clusters")
    assert len(clusters) == 1
    return clusters[0]


@pytest.fixture(scope="module")
def config_dir(host):
    return var(host, "agent_config_dir")


@pytest.fixture(scope="module")
def config_path(config_dir, cluster):
    return f"{config_dir}/{cluster['name']}.yml"


def test_agent_venv(host):
    agent = host.file("/opt/pg-backup/bin/pg-backup")
    assert agent.exists and agent.mode & 0o111
    assert host.run("/opt/pg-backup/bin/pg-backup --version").rc == 0
    assert host.file("/opt/pg-backup/bin/python").exists


def test_config_file(host, config_path, cluster):
    f = host.file(config_path)
    assert f.is_file
    assert f.user == "postgres"
    assert f.mode == 0o600
    assert f"cluster: {cluster['name']}" in f.content_string
    assert cluster["passphrase"] not in f.content_string
    assert "testing" not in f.content_string  # no S3 credentials in the config itself


def test_config_validates_as_postgres(host, config_path):
    # No sudo on these machines: runuser (we are root)
    cmd = host.run(f"runuser -u postgres -- /opt/pg-backup/bin/pg-backup --config {config_path} config validate")
    assert cmd.rc == 0, cmd.stderr


@pytest.mark.parametrize("suffix", ["passphrase", "s3-credentials"])
def test_secret_files(host, config_dir, cluster, suffix):
    f = host.file(f"{config_dir}/{cluster['name']}.{suffix}")
    assert f.is_file
    assert f.user == "postgres"
    assert f.mode == 0o600


def test_cron_file(host, cluster, config_path):
    f = host.file(f"/etc/cron.d/pg-backup-{cluster['name']}")
    assert f.is_file
    content = f.content_string
    for tier in ("daily", "weekly", "monthly"):
        assert f"backup --tier {tier}" in content, content
    assert " prune" in content, content
    assert "backup --physical --tier daily --skip-if-standby" in content, content
    assert "verify --restore" in content, content
    assert config_path in content
    assert "--skip-if-standby" in content
    assert " postgres " in content  # each job runs as the cluster's OS user


def test_backup_landed_in_bucket(host, cluster):
    endpoint = var(host, "pgb_test_s3_endpoint")
    bucket = var(host, "pgb_test_bucket")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"molecule/{cluster['name']}/backups/")
            .get("Contents", [])]
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    assert manifests, keys
    assert any(k.endswith(".dump.zst.gpg") and "-app." in k for k in keys), keys
    assert any(k.endswith("globals.sql.zst.gpg") for k in keys), keys


def test_bucket_role_configured_the_bucket(host):
    bucket = var(host, "pgb_test_bucket")
    s3 = boto3.client("s3", endpoint_url=var(host, "pgb_test_s3_endpoint"), region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["pg-backup-daily-expiration"]["Expiration"] == {"Days": 30 + 30}
    assert rules["pg-backup-daily-expiration"]["Filter"]["And"]["Prefix"] == "molecule/"
    policy_dir = var(host, "bucket_policy_dir")
    for duty in ("writer", "pruner", "restorer"):
        assert host.file(f"{policy_dir}/{bucket}-{duty}.json").exists


def test_backup_checksum_module(host, config_path):
    result = host.ansible("miometry.pg_backup.backup_checksum",
                          f"agent_path=/opt/pg-backup/bin/pg-backup config={config_path} all=true deep=true",
                          check=False, become=True, become_user="postgres")
    assert len(result["backups"]) >= 1, result
    assert all(b["ok"] for b in result["backups"]), result
    assert not result.get("failed_objects"), result


def psql(host, sql, db="postgres"):
    port = var(host, "pgb_test_port")
    cmd = host.run(f"runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -X -A -t -h 127.0.0.1 -p {port} "
                   f"-d {db} -c \"{sql}\"")
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def test_restore_playbook_made_new_database(host):
    assert psql(host, "SELECT count(*) FROM work_log_entries", db="app_restored") == "300"


def test_extract_playbook(host):
    f = host.file(var(host, "pgb_test_root") + "/extract.csv")
    assert f.is_file and f.mode == 0o600
    lines = f.content_string.splitlines()
    assert lines[0] == "id,member_id,minutes"
    assert len(lines) == 101 and all(",xyz," in ln for ln in lines[1:])
    # the temporary database is gone
    assert psql(host, "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgb_extract_%'") == "0"
