# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The bucket role (amazon.aws.s3_bucket_info, amazon.aws.s3_bucket and the collection's backup_lifecycle)
against a real S3 endpoint (moto_server in its own process).

The role and the module run for real through ansible-playbook (local connection, the venv's interpreter
set explicitly: interpreter discovery picks a broken pyenv shim on these machines), with galaxy.yml's
dependencies from <venv>/collections (scripts/install-collections.sh); the results are checked with boto3.
Plain pytest:

    .venv/bin/python -m pytest tests/integration_moto

moto stores lifecycle rules without applying them, so what is checked is the configuration S3 holds.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

boto3 = pytest.importorskip('boto3')
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
PYTHON = sys.executable
MOTO_SERVER = os.path.join(VENV_BIN, 'moto_server')
ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, 'ansible-playbook')
REGION = 'eu-central-1'
ACCESS_KEY = 'AKIAMOTOINTEGRATION'  # long enough that no_log masking does not garble the output
SECRET_KEY = 'moto-integration-secret'

pytestmark = pytest.mark.skipif(not (os.path.exists(MOTO_SERVER) and os.path.exists(ANSIBLE_PLAYBOOK)),
                                reason='needs moto_server and ansible-playbook next to %s' % PYTHON)


def _free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(scope='module')
def endpoint(tmp_path_factory):
    port = _free_port()
    log = open(str(tmp_path_factory.mktemp('moto') / 'moto.log'), 'w')
    proc = subprocess.Popen([MOTO_SERVER, '-H', '127.0.0.1', '-p', str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail('moto_server did not start on port %d' % port)
            time.sleep(0.1)
    yield 'http://127.0.0.1:%d' % port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope='module')
def ansible_env(tmp_path_factory):
    base = tmp_path_factory.mktemp('collections')
    namespace = base / 'ansible_collections' / 'miometry'
    namespace.mkdir(parents=True)
    os.symlink(ROOT, str(namespace / 'pg_backup'))
    inventory = base / 'inventory.ini'
    inventory.write_text('localhost ansible_connection=local ansible_python_interpreter=%s\n' % PYTHON)
    dependencies = os.path.join(sys.prefix, 'collections')
    if not os.path.isdir(os.path.join(dependencies, 'ansible_collections', 'amazon', 'aws')):
        pytest.fail('%s lacks amazon.aws: run scripts/install-collections.sh' % dependencies, pytrace=False)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH='%s:%s' % (base, dependencies), ANSIBLE_HOME=str(base / '.ansible'),
               ANSIBLE_INVENTORY=str(inventory), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_LOCALHOST_WARNING='0')
    for name in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE', 'AWS_SESSION_TOKEN'):
        env.pop(name, None)
    return env


@pytest.fixture
def s3(endpoint):
    return client(endpoint, REGION)


def client(endpoint, region):
    return boto3.client('s3', endpoint_url=endpoint, region_name=region, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY,
                        config=Config(s3={'addressing_style': 'path'}, request_checksum_calculation='when_required',
                                      response_checksum_validation='when_required'))


def new_bucket_name():
    return 'pgb-' + uuid.uuid4().hex[:12]


class Run(object):
    def __init__(self, proc, result_file):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        with open(result_file) as f:
            self.result = json.load(f)

    @property
    def failed(self):
        return bool(self.result.get('failed'))

    def all_warnings(self):
        return ' '.join(self.result.get('warnings') or []) + self.stdout


def run_playbook(env, tmp_path, play, *options):
    path = tmp_path / ('play-%s.yml' % uuid.uuid4().hex[:8])
    path.write_text(json.dumps([play], indent=2))  # YAML is a superset of JSON
    proc = subprocess.run([ANSIBLE_PLAYBOOK, str(path)] + list(options), env=env, cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300,
                          check=False)
    return proc


def run_module(env, tmp_path, endpoint, args, *options):
    """Run backup_lifecycle once with ``args`` (plus the endpoint's connection options); return its result."""
    result_file = tmp_path / ('result-%s.json' % uuid.uuid4().hex[:8])
    module_args = dict(region=REGION, endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                       aws_config={'s3': {'addressing_style': 'path'}})
    module_args.update(args)
    play = {
        'hosts': 'localhost', 'gather_facts': False,
        'tasks': [
            {'name': 'Write the lifecycle rules', 'miometry.pg_backup.backup_lifecycle': module_args,
             'register': 'bucket_result', 'ignore_errors': True},
            {'name': 'Save the result', 'ansible.builtin.copy': {
                'content': '{{ bucket_result | to_json }}', 'dest': str(result_file), 'mode': '0600'},
             'check_mode': False, 'diff': False},
        ],
    }
    proc = run_playbook(env, tmp_path, play, *options)
    assert result_file.exists(), proc.stdout
    return Run(proc, str(result_file))


def rules_by_id(s3, bucket):
    return dict((r['ID'], r) for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)['Rules'])


def role_play(endpoint, bucket, policy_dir, **extra):
    role_vars = dict(bucket_name=bucket, bucket_region=REGION, bucket_prefix='prod', bucket_endpoint_url=endpoint,
                     bucket_force_path_style=True, bucket_access_key=ACCESS_KEY, bucket_secret_key=SECRET_KEY,
                     bucket_policy_dir=str(policy_dir), bucket_policy_clusters=['main'])
    role_vars.update(extra)
    return {'hosts': 'localhost', 'gather_facts': False, 'vars': role_vars,
            'roles': [{'role': 'miometry.pg_backup.bucket'}]}


def allowed_actions(policy):
    return set(a for s in policy['Statement'] if s['Effect'] == 'Allow'
               for a in (s['Action'] if isinstance(s['Action'], list) else [s['Action']]))


def test_role_configures_the_bucket_and_writes_valid_policies(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    policy_dir = tmp_path / 'iam'
    play = role_play(endpoint, bucket, policy_dir)
    # bucket_policy_clusters' default: the agent_clusters of the inventory's hosts, less those in another bucket.
    del play['vars']['bucket_policy_clusters']
    play['pre_tasks'] = [{'name': 'The hosts\' clusters', 'ansible.builtin.set_fact': {'agent_clusters': [
        {'name': 'main', 'config': {'repository': {'s3': {'bucket': bucket}}}},
        {'name': 'billing'},
        {'name': 'elsewhere', 'config': {'repository': {'s3': {'bucket': 'another-bucket'}}}}]}}]
    proc = run_playbook(ansible_env, tmp_path, play)
    assert proc.returncode == 0, proc.stdout
    assert s3.get_bucket_versioning(Bucket=bucket)['Status'] == 'Enabled'
    written = sorted(p.name for p in policy_dir.iterdir())
    names = ('pruner-billing', 'pruner-main', 'restorer', 'writer-billing', 'writer-main')
    assert written == ['%s-%s.json' % (bucket, n) for n in names]
    policies = {}
    for name in ('writer-main', 'pruner-main', 'restorer'):
        with open(str(policy_dir / ('%s-%s.json' % (bucket, name)))) as f:
            policies[name] = json.load(f)
        assert policies[name]['Version'] == '2012-10-17'
    writer = allowed_actions(policies['writer-main'])
    assert {'s3:ListBucket', 's3:PutObject', 's3:PutObjectTagging', 's3:AbortMultipartUpload',
            's3:ListMultipartUploadParts', 's3:GetObject'} <= writer
    assert not [a for a in writer if 'Delete' in a], writer
    puts = [s for s in policies['writer-main']['Statement'] if s['Effect'] == 'Allow' and 's3:PutObject' in s['Action']]
    assert [s['Resource'] for s in puts] == [['arn:aws:s3:::%s/prod/main/*' % bucket]] * 2
    assert [s['Condition'] for s in puts] == [
        {'Null': {'s3:if-none-match': 'false'}, 'StringEquals': {'s3:if-none-match': '*'}},
        {'Bool': {'s3:ObjectCreationOperation': 'false'}}]
    denied = [a for s in policies['writer-main']['Statement'] if s['Effect'] == 'Deny' for a in s['Action']]
    assert 's3:DeleteObject' in denied
    pruner = allowed_actions(policies['pruner-main'])
    assert 's3:DeleteObject' in pruner and 's3:DeleteObjectVersion' not in pruner
    assert {'s3:GetObject', 's3:GetObjectVersion', 's3:RestoreObject'} <= allowed_actions(policies['restorer'])

    again = run_playbook(ansible_env, tmp_path, play)
    assert again.returncode == 0 and 'changed=0' in again.stdout, again.stdout


def test_policies_need_a_cluster(ansible_env, tmp_path, endpoint, s3):
    play = role_play(endpoint, new_bucket_name(), tmp_path / 'iam', bucket_policy_clusters=[])
    proc = run_playbook(ansible_env, tmp_path, play, '--tags', 'bucket_policies')
    assert proc.returncode != 0
    assert 'bucket_policies: no cluster stores in bucket' in proc.stdout, proc.stdout


def test_role_refuses_rules_shorter_than_a_clusters_retention(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    clusters = [{'name': 'main', 'config': {'repository': {'type': 's3', 's3': {'bucket': bucket}},
                                            'retention': {'daily_days': 45}}}]
    proc = run_playbook(ansible_env, tmp_path, role_play(endpoint, bucket, tmp_path / 'iam', bucket_clusters=clusters))
    assert proc.returncode != 0
    assert 'S3 would expire backups the agent still keeps' in proc.stdout
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket)


def recap(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith('localhost') and 'changed=' in line]
    assert len(lines) == 1, proc.stdout
    return lines[0]


def test_role_configures_a_new_bucket_then_a_second_run_and_check_mode_change_nothing(
        ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    play = role_play(endpoint, bucket, tmp_path / 'iam')
    first = run_playbook(ansible_env, tmp_path, play)
    assert first.returncode == 0, first.stdout
    assert s3.get_bucket_location(Bucket=bucket)['LocationConstraint'] == REGION
    assert s3.get_bucket_versioning(Bucket=bucket)['Status'] == 'Enabled'
    sse = s3.get_bucket_encryption(Bucket=bucket)['ServerSideEncryptionConfiguration']['Rules'][0]
    assert sse['ApplyServerSideEncryptionByDefault']['SSEAlgorithm'] == 'AES256'
    assert all(s3.get_public_access_block(Bucket=bucket)['PublicAccessBlockConfiguration'].values())
    rules = rules_by_id(s3, bucket)
    assert sorted(rules) == ['pg-backup-abort-incomplete-multipart', 'pg-backup-daily-expiration',
                             'pg-backup-monthly-expiration', 'pg-backup-noncurrent-expiration',
                             'pg-backup-weekly-expiration']
    assert rules['pg-backup-daily-expiration']['Expiration'] == {'Days': 30 + 30}
    assert rules['pg-backup-monthly-expiration']['Expiration'] == {'Days': 84 * 31 + 30}
    assert rules['pg-backup-daily-expiration']['Filter'] == {
        'And': {'Prefix': 'prod/', 'Tags': [{'Key': 'tier', 'Value': 'daily'}]}}

    again = run_playbook(ansible_env, tmp_path, play)
    assert again.returncode == 0 and 'changed=0' in recap(again), again.stdout
    check = run_playbook(ansible_env, tmp_path, play, '--check', '--diff')
    assert check.returncode == 0 and 'changed=0' in recap(check), check.stdout


def test_check_mode_reports_the_change_and_changes_nothing(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    assert run_playbook(ansible_env, tmp_path, role_play(endpoint, bucket, tmp_path / 'iam')).returncode == 0
    changed = role_play(endpoint, bucket, tmp_path / 'iam', bucket_versioning=False,
                        bucket_retention={'daily_days': 14, 'weekly_weeks': 12, 'monthly_months': 84})
    run = run_playbook(ansible_env, tmp_path, changed, '--check')
    assert run.returncode == 0, run.stdout
    assert 'changed=2' in recap(run), run.stdout  # the bucket's settings and its lifecycle rules
    assert "'versioning': 'Suspended'" in run.stdout or '"versioning": "Suspended"' in run.stdout, run.stdout
    assert s3.get_bucket_versioning(Bucket=bucket)['Status'] == 'Enabled'
    assert rules_by_id(s3, bucket)['pg-backup-daily-expiration']['Expiration'] == {'Days': 60}

    missing = new_bucket_name()
    run = run_playbook(ansible_env, tmp_path, role_play(endpoint, missing, tmp_path / 'iam2'), '--check')
    assert run.returncode == 0 and 'changed=0' not in recap(run), run.stdout
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=missing)


def test_diff_shows_the_lifecycle_rules_before_and_after(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    assert run_playbook(ansible_env, tmp_path, role_play(endpoint, bucket, tmp_path / 'iam')).returncode == 0
    run = run_playbook(ansible_env, tmp_path,
                       role_play(endpoint, bucket, tmp_path / 'iam', bucket_expiration_margin_days=45), '--diff')
    assert run.returncode == 0, run.stdout
    assert '--- before' in run.stdout and '+++ after' in run.stdout
    assert '-                "Days": 60' in run.stdout and '+                "Days": 75' in run.stdout, run.stdout
    assert rules_by_id(s3, bucket)['pg-backup-daily-expiration']['Expiration'] == {'Days': 75}


def test_bucket_in_another_region_fails(ansible_env, tmp_path, endpoint):
    bucket = new_bucket_name()
    client(endpoint, 'us-west-2').create_bucket(Bucket=bucket,
                                                CreateBucketConfiguration={'LocationConstraint': 'us-west-2'})
    run = run_playbook(ansible_env, tmp_path, role_play(endpoint, bucket, tmp_path / 'iam'))
    assert run.returncode != 0
    assert 'is in region us-west-2, not %s' % REGION in run.stdout, run.stdout


def test_missing_bucket_without_create_fails(ansible_env, tmp_path, endpoint):
    run = run_playbook(ansible_env, tmp_path, role_play(endpoint, new_bucket_name(), tmp_path / 'iam',
                                                        bucket_create=False))
    assert run.returncode != 0
    assert 'does not exist (bucket_create: false)' in run.stdout, run.stdout


def test_public_access_block_false_removes_the_block_once(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    assert run_playbook(ansible_env, tmp_path, role_play(endpoint, bucket, tmp_path / 'iam')).returncode == 0
    play = role_play(endpoint, bucket, tmp_path / 'iam', bucket_public_access_block=False)
    run = run_playbook(ansible_env, tmp_path, play)
    assert run.returncode == 0 and 'changed=0' not in recap(run), run.stdout
    with pytest.raises(ClientError):
        s3.get_public_access_block(Bucket=bucket)
    again = run_playbook(ansible_env, tmp_path, play)
    assert again.returncode == 0 and 'changed=0' in recap(again), again.stdout


def test_object_lock_is_set_on_creation_and_refused_afterwards(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    lock = {'mode': 'GOVERNANCE', 'days': 10}
    play = role_play(endpoint, bucket, tmp_path / 'iam', bucket_object_lock=lock)
    run = run_playbook(ansible_env, tmp_path, play)
    assert run.returncode == 0, run.stdout
    config = s3.get_object_lock_configuration(Bucket=bucket)['ObjectLockConfiguration']
    assert config['ObjectLockEnabled'] == 'Enabled'
    assert config['Rule']['DefaultRetention']['Mode'] == 'GOVERNANCE'
    assert config['Rule']['DefaultRetention']['Days'] == 10
    assert s3.get_bucket_versioning(Bucket=bucket)['Status'] == 'Enabled'
    again = run_playbook(ansible_env, tmp_path, play)
    assert again.returncode == 0 and 'changed=0' in recap(again), again.stdout

    plain = new_bucket_name()
    assert run_playbook(ansible_env, tmp_path, role_play(endpoint, plain, tmp_path / 'iam')).returncode == 0
    run = run_playbook(ansible_env, tmp_path, role_play(endpoint, plain, tmp_path / 'iam', bucket_object_lock=lock))
    assert run.returncode != 0
    assert 'object lock' in run.stdout.lower(), run.stdout
    with pytest.raises(ClientError):
        s3.get_object_lock_configuration(Bucket=plain)


def test_lifecycle_module_preserves_foreign_rules(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={'LocationConstraint': REGION})
    foreign = {'ID': 'logs-expire', 'Status': 'Enabled', 'Filter': {'Prefix': 'logs/'}, 'Expiration': {'Days': 3}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={'Rules': [foreign]})
    run = run_module(ansible_env, tmp_path, endpoint, dict(name=bucket, prefix='prod'))
    assert not run.failed and run.result['changed'], run.stdout
    rules = rules_by_id(s3, bucket)
    assert rules['logs-expire'] == foreign
    assert 'pg-backup-daily-expiration' in rules and 'pg-backup-noncurrent-expiration' not in rules
    again = run_module(ansible_env, tmp_path, endpoint, dict(name=bucket, prefix='prod'))
    assert again.result['changed'] is False, again.stdout


def test_transitions_warn_about_minimum_duration_and_contradictions_fail(ansible_env, tmp_path, endpoint, s3):
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={'LocationConstraint': REGION})
    transitions = {'daily': [{'days': 10, 'storage_class': 'GLACIER'}]}
    run = run_module(ansible_env, tmp_path, endpoint, dict(name=bucket, prefix='prod', transitions=transitions))
    assert not run.failed, run.stdout
    assert 'billed for at least 90 days' in run.all_warnings()
    assert rules_by_id(s3, bucket)['pg-backup-daily-transition']['Transitions'] == [
        {'Days': 10, 'StorageClass': 'GLACIER'}]

    late = {'daily': [{'days': 60, 'storage_class': 'GLACIER'}]}
    run = run_module(ansible_env, tmp_path, endpoint, dict(name=bucket, prefix='prod', transitions=late))
    assert run.failed
    assert 'contradictory lifecycle settings' in run.result['msg']
    assert 'pg-backup-daily-transition' in rules_by_id(s3, bucket)  # nothing was changed
