"""Verify the default scenario: files the roles wrote, the bucket's settings and lifecycle rules (bucket
role), the backup that side_effect took, in the bucket, and that miometry.pg_backup.backup_checksum passes
for it, the signing keys and the signatures side_effect checked. Runs on the control node (which is also the
database host: local connection)."""

import json
import os
import shutil

import boto3
import pytest
import testinfra.utils.ansible_runner
import yaml

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
    assert "encryption:\n  mode: public-key" in f.content_string, f.content_string
    assert "PRIVATE KEY" not in f.content_string and "private_key_files" not in f.content_string
    assert "testing" not in f.content_string  # no S3 credentials in the config itself
    for duty in ("writer", "pruner"):
        assert f"{duty}: {config_path[:-len('.yml')]}.s3-{duty}" in f.content_string, f.content_string
    assert "restorer" not in f.content_string  # delivered for a restore job only


def test_config_validates_as_postgres(host, config_path):
    # No sudo on these machines: runuser (we are root)
    cmd = host.run(f"runuser -u postgres -- /opt/pg-backup/bin/pg-backup --config {config_path} config validate")
    assert cmd.rc == 0, cmd.stderr


@pytest.mark.parametrize("suffix", ["s3-writer", "s3-pruner"])
def test_secret_files(host, config_dir, cluster, suffix):
    f = host.file(f"{config_dir}/{cluster['name']}.{suffix}")
    assert f.is_file
    assert f.user == "postgres"
    assert f.mode == 0o600


def test_database_host_holds_the_public_key_only(host, config_dir, cluster):
    """Public-key mode: the encryption public key (0644), no encryption secret key (the only secret key is the
    cluster's own signing key), no restorer credentials, and nothing left of the restore, extract and verify
    jobs' secrets after side_effect ran them."""
    pub = host.file(f"{config_dir}/{cluster['name']}.pub.asc")
    assert pub.is_file and pub.mode == 0o644
    assert "BEGIN PGP PUBLIC KEY BLOCK" in pub.content_string
    found = host.run(f"grep -rl 'PGP PRIVATE KEY' {config_dir} {var(host, 'agent_state_dir')}")
    assert found.stdout.split() == [f"{config_dir}/{cluster['name']}.signing.asc"], found.stdout
    assert not host.file(f"{config_dir}/{cluster['name']}.s3-restorer").exists
    jobs = host.file(var(host, "agent_job_secrets_dir"))
    assert jobs.is_directory and jobs.mode == 0o711
    assert jobs.listdir() == [], "a job left its secrets on the host"


def test_cron_file(host, cluster, config_path):
    f = host.file(f"/etc/cron.d/pg-backup-{cluster['name']}")
    assert f.is_file
    content = f.content_string
    for tier in ("daily", "weekly", "monthly"):
        assert f"backup --tier {tier}" in content, content
    assert " prune" in content, content
    assert "backup --physical --tier daily --skip-if-standby" in content, content
    # Public-key mode: the host cannot decrypt, so the monthly restore test runs as playbooks/verify.yml
    assert "verify --restore" not in content, content
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
    cluster = var(host, "pgb_test_cluster")
    for name in (f"writer-{cluster}", f"pruner-{cluster}", "restorer"):
        assert host.file(f"{policy_dir}/{bucket}-{name}.json").exists, name


def test_backup_checksum_module_needs_the_restorer_credentials(host, config_path):
    """The database host's own configuration cannot read backups (side_effect verified them with
    playbooks/verify.yml, which delivers the restorer credentials and the secret key)."""
    result = host.ansible("miometry.pg_backup.backup_checksum",
                          f"agent_path=/opt/pg-backup/bin/pg-backup config={config_path} all=true deep=true",
                          check=False, become=True, become_user="postgres")
    # testinfra returns the module's result without raising (check=False): the agent's exit 2, named
    assert result.get("error_meaning") == "usage or configuration error", result
    assert "repository.s3.credentials.restorer" in str(result), result


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


def _signing_fingerprint(host, name):
    """The fingerprint `pg-backup keys create --purpose signing --json` reported in prepare."""
    return json.loads(host.file(f"{var(host, 'pgb_test_root')}/keys/{name}-signing.json").content_string)[
        "key"]["fingerprint"]


def test_signing_keys_where_each_belongs(host, config_dir, config_path, cluster):
    """The host's own signing secret key (0600, the cluster's OS user) and the trusted signing public key
    (0644), named in the configuration with signing.require on."""
    name = cluster["name"]
    secret = host.file(f"{config_dir}/{name}.signing.asc")
    assert secret.is_file and secret.mode == 0o600 and secret.user == "postgres"
    assert "BEGIN PGP PRIVATE KEY BLOCK" in secret.content_string
    signer = host.file(f"{config_dir}/{name}.signer-0.pub.asc")
    assert signer.is_file and signer.mode == 0o644
    assert signer.content_string.strip() == host.file(
        f"{var(host, 'pgb_test_root')}/keys/{host.backend.get_hostname()}-signing.pub.asc").content_string.strip()
    config = yaml.safe_load(host.file(config_path).content_string)
    assert config["signing"] == {"require": True, "secret_key_file": secret.path,
                                 "trusted_public_key_files": [signer.path]}, config["signing"]


AGENT = "/opt/pg-backup/bin/pg-backup"


def _write(path, text, owner="postgres"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    shutil.chown(path, owner)


@pytest.fixture(scope="module")
def signing_job(host, config_path):
    """What a restore job holds (the installed configuration plus the restorer credentials and the encryption
    secret key, as the agent role's job_secrets delivers them) and a forger's configuration: the same, signing
    with the foreign key prepare made. The verifier runs on the host itself (local connection). Removed after."""
    root = var(host, "pgb_test_root")
    job = f"{root}/{host.backend.get_hostname()}/signing-job"
    os.mkdir(job, 0o700)
    shutil.chown(job, "postgres")
    creds = var(host, "agent_restore_s3_credentials")
    _write(f"{job}/s3-restorer", f"[default]\naws_access_key_id = {creds['access_key_id']}\n"
                                 f"aws_secret_access_key = {creds['secret_access_key']}\n")
    _write(f"{job}/secret-key.asc", host.file(f"{root}/keys/restore.sec.asc").content_string)
    _write(f"{job}/secret-key.passphrase", var(host, "pgb_test_key_passphrase"))
    _write(f"{job}/foreign-signing.sec.asc", host.file(f"{root}/keys/foreign-signing.sec.asc").content_string)
    config = yaml.safe_load(host.file(config_path).content_string)
    config["repository"]["s3"]["credentials"]["restorer"] = f"{job}/s3-restorer"
    config["encryption"].update(private_key_files=[f"{job}/secret-key.asc"],
                                private_key_passphrase_file=f"{job}/secret-key.passphrase")
    _write(f"{job}/job.yml", yaml.safe_dump(config))
    config["signing"]["secret_key_file"] = f"{job}/foreign-signing.sec.asc"
    _write(f"{job}/forger.yml", yaml.safe_dump(config))
    yield job
    shutil.rmtree(job, ignore_errors=True)


def agent(host, config, *args):
    cmd = host.run(f"runuser -u postgres -- {AGENT} --config {config} --json {' '.join(args)}")
    return cmd.rc, json.loads(cmd.stdout or "{}"), cmd.stderr


def test_backups_are_signed_and_a_foreign_signature_is_refused(host, signing_job):
    """`list --json` names the host's own signing key as the signer of every backup (side_effect's restore,
    extract and verify jobs succeeded with signatures required). A backup stored under the cluster's prefix with
    the public key and a FOREIGN signing key (what anyone holding writer rights could do) is listed as refused,
    and its restore exits 4 naming the untrusted signer."""
    own = _signing_fingerprint(host, host.backend.get_hostname())
    foreign = _signing_fingerprint(host, "foreign")
    rc, forged, err = agent(host, f"{signing_job}/forger.yml", "backup", "--tier", "daily")
    assert rc == 0, err
    rc, listing, err = agent(host, f"{signing_job}/job.yml", "list")
    assert rc == 0, err
    backups = listing["backups"]
    assert backups and {b["signer"] for b in backups} == {own}, backups
    assert forged["backup_id"] not in {b["backup_id"] for b in backups}
    assert forged["backup_id"] in listing["refused"], listing["refused"]
    rc, refused, err = agent(host, f"{signing_job}/job.yml", "restore", forged["backup_id"], "--database", "app",
                             "--target-database", "app_forged")
    assert rc == 4, (refused, err)
    message = json.dumps(refused.get("error")) + err
    assert "not trusted" in message and foreign[-16:] in message.upper(), message
    assert psql(host, "SELECT count(*) FROM pg_database WHERE datname = 'app_forged'") == "0"
