# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.miometry.pg_backup.plugins.module_utils import agent_client

CONFIG = '/etc/pg-backup/main.yml'


def call_agent(run_module, agent_path, agent_args, fail_on_error=True):
    """Build a module with the shared spec, run the agent once, exit with what the client returned."""
    def main():
        module = AnsibleModule(argument_spec=agent_client.agent_argument_spec(), supports_check_mode=True)
        rc, document = agent_client.run_agent(module, agent_args, fail_on_error=fail_on_error)
        module.exit_json(rc=rc, document=document)
    return run_module(main, dict(agent_path=agent_path, config=CONFIG))


def test_argument_spec_has_agent_path_with_default_and_required_config():
    spec = agent_client.agent_argument_spec()
    assert spec == dict(agent_path=dict(type='path', default='/opt/pg-backup/bin/pg-backup'),
                        config=dict(type='path', required=True))
    assert agent_client.agent_argument_spec() is not spec  # callers may update() their own copy


def test_runs_agent_with_config_and_json_before_the_command(run_module, fake_agent):
    fake_agent.respond('list', backups=[], repository='/r/main/')
    out = call_agent(run_module, fake_agent.path, ['list', '--tier', 'daily'])
    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'list', '--tier', 'daily']
    assert out.result['rc'] == 0
    assert out.result['document']['repository'] == '/r/main/'


def test_agent_error_fails_with_message_exit_code_and_type(run_module, fake_agent):
    fake_agent.respond('list', rc=5, stderr='pg-backup: error: bucket gone\n',
                       error=dict(type='StorageError', message='bucket gone; check the endpoint'))
    out = call_agent(run_module, fake_agent.path, ['list'])
    assert out.failed
    assert out.result['msg'] == 'bucket gone; check the endpoint'
    assert out.result['exit_code'] == 5
    assert out.result['error_type'] == 'StorageError'
    assert out.result['error_meaning'] == 'meaning of 5'
    assert out.result['stderr'] == 'pg-backup: error: bucket gone\n'


def test_config_problems_are_returned(run_module, fake_agent):
    fake_agent.respond('list', rc=2, error=dict(type='ConfigError', message='/c.yml: 1 problem(s)',
                                                problems=['postgres.port: expected an integer']))
    out = call_agent(run_module, fake_agent.path, ['list'])
    assert out.failed
    assert out.result['problems'] == ['postgres.port: expected an integer']


def test_agent_error_is_returned_to_the_caller_when_asked(run_module, fake_agent):
    fake_agent.respond('verify', rc=4, error=dict(type='IntegrityError', message='integrity failure: x'))
    out = call_agent(run_module, fake_agent.path, ['verify', '--all'], fail_on_error=False)
    assert not out.failed
    assert out.result['rc'] == 4
    assert out.result['document']['error']['type'] == 'IntegrityError'


@pytest.mark.parametrize('version, expected', [
    (2, 'the agent is newer than this collection'),
    (0, 'the agent is older than this collection'),
    (None, 'the agent is older than this collection'),
])
def test_unsupported_schema_version_fails_clearly(run_module, fake_agent, version, expected):
    fake_agent.respond('list', schema_version=version, backups=[])
    out = call_agent(run_module, fake_agent.path, ['list'])
    assert out.failed
    assert 'schema_version %r' % version in out.result['msg']
    assert expected in out.result['msg']


def test_non_json_output_fails_showing_stderr(run_module, fake_agent):
    fake_agent.respond_raw('Traceback (most recent call last):\n', rc=1, stderr='ImportError: no module named zstandard\n')
    out = call_agent(run_module, fake_agent.path, ['list'])
    assert out.failed
    assert 'printed no JSON document (exit code 1)' in out.result['msg']
    assert 'ImportError: no module named zstandard' in out.result['msg']


def test_json_that_is_not_an_envelope_fails(run_module, fake_agent):
    fake_agent.respond_raw('[1, 2]')
    out = call_agent(run_module, fake_agent.path, ['list'])
    assert out.failed
    assert 'printed no JSON document' in out.result['msg']


def test_missing_binary_names_the_agent_role(run_module, tmp_path):
    missing = str(tmp_path / 'nowhere' / 'pg-backup')
    out = call_agent(run_module, missing, ['list'])
    assert out.failed
    assert missing in out.result['msg']
    assert 'miometry.pg_backup.agent role' in out.result['msg']


def test_non_executable_file_is_refused(run_module, tmp_path):
    path = tmp_path / 'pg-backup'
    path.write_text(u'not a program')
    os.chmod(str(path), 0o644)
    out = call_agent(run_module, str(path), ['list'])
    assert out.failed
    assert 'is not an executable file' in out.result['msg']


def test_bare_name_is_found_on_path(run_module, fake_agent, monkeypatch):
    monkeypatch.setenv('PATH', fake_agent.directory + os.pathsep + os.environ.get('PATH', ''))
    fake_agent.respond('list', backups=[])
    out = call_agent(run_module, 'pg-backup', ['list'])
    assert not out.failed
    assert fake_agent.called()


def test_bare_name_not_on_path_names_the_agent_role(run_module):
    out = call_agent(run_module, 'pg-backup-not-installed-anywhere', ['list'])
    assert out.failed
    assert 'not found on PATH' in out.result['msg']
    assert 'miometry.pg_backup.agent role' in out.result['msg']
