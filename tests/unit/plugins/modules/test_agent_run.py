# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.miometry.pg_backup.plugins.modules import agent_run

CONFIG = '/etc/pg-backup/main.yml'
BACKUP_ID = '20261125T020000Z-logical-daily'


def run(run_module, fake_agent, command, args=None, check_mode=False, **options):
    params = dict(agent_path=fake_agent.path, config=CONFIG, command=command, **options)
    if args is not None:
        params['args'] = args
    return run_module(agent_run.main, params, check_mode=check_mode)


def test_runs_the_command_with_its_arguments_and_returns_the_document(run_module, fake_agent):
    fake_agent.respond('backup', stderr='pg-backup: dumping app\n', backup_id=BACKUP_ID, bytes=2048)
    out = run(run_module, fake_agent, 'backup', ['--tier', 'daily', '--skip-if-standby'])

    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'backup', '--tier', 'daily', '--skip-if-standby']
    assert out.result['changed'] is True
    assert out.result['rc'] == 0
    assert out.result['ok'] is True
    assert out.result['error'] is None
    assert out.result['result']['backup_id'] == BACKUP_ID
    assert out.result['result']['schema_version'] == 1
    assert out.result['stderr'] == 'pg-backup: dumping app\n'
    assert out.result['agent_command'] == [fake_agent.path, '--config', CONFIG, '--json', 'backup', '--tier', 'daily',
                                           '--skip-if-standby']


def test_a_backup_skipped_on_a_standby_is_no_change(run_module, fake_agent):
    fake_agent.respond('backup', skipped=True, reason='standby')
    out = run(run_module, fake_agent, 'backup', ['--tier', 'daily', '--skip-if-standby'])

    assert not out.failed
    assert out.result['changed'] is False
    assert out.result['result']['skipped'] is True


def test_config_validate_is_two_words_of_the_command_line(run_module, fake_agent):
    fake_agent.respond('config validate', path=CONFIG, valid=True, problems=[])
    out = run(run_module, fake_agent, 'config validate')

    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'config', 'validate']
    assert out.result['changed'] is False


@pytest.mark.parametrize('command, args', [
    ('list', []), ('show', [BACKUP_ID]), ('verify', ['--all', '--deep']), ('verify', ['--restore']),
    ('health', []), ('wal-check', ['--timeout', '60']), ('config validate', []),
])
def test_read_only_commands_never_report_a_change_and_run_in_check_mode(run_module, fake_agent, command, args):
    for check_mode in (False, True):
        fake_agent.respond(command)
        out = run(run_module, fake_agent, command, args, check_mode=check_mode)

        assert not out.failed
        assert out.result['changed'] is False
        assert fake_agent.argv()[3:] == command.split() + args


@pytest.mark.parametrize('command', ['restore', 'pitr'])
def test_restore_and_pitr_change_when_they_succeed(run_module, fake_agent, command):
    fake_agent.respond(command)
    assert run(run_module, fake_agent, command, ['x']).result['changed'] is True

    fake_agent.respond(command, rc=6, error=dict(type='PostgresError', message='server gone'))
    out = run(run_module, fake_agent, command, ['x'], fail_on_error=False)
    assert not out.failed
    assert out.result['changed'] is False


def test_an_agent_error_fails_with_its_message_exit_code_and_error(run_module, fake_agent):
    fake_agent.respond('list', rc=5, error=dict(type='StorageError', message='storage unreachable: timeout'))
    out = run(run_module, fake_agent, 'list')

    assert out.failed
    assert out.result['msg'] == 'storage unreachable: timeout'
    assert out.result['rc'] == 5
    assert out.result['ok'] is False
    assert out.result['error'] == dict(exit_code=5, type='StorageError', message='storage unreachable: timeout',
                                       meaning='meaning of 5')
    assert out.result['result']['command'] == 'list'


def test_an_error_without_a_message_names_the_command_and_exit_code(run_module, fake_agent):
    fake_agent.respond('verify', rc=4)
    out = run(run_module, fake_agent, 'verify', ['--all'])

    assert out.failed
    assert out.result['msg'] == 'pg-backup verify failed with exit code 4'


def test_a_failed_drill_is_a_change_and_can_be_collected(run_module, fake_agent):
    fake_agent.respond('drill', rc=4, drill_id='20261125T030000Z', passed=False, failures=['RTO 900 s > 600 s'],
                       error=dict(type='IntegrityError', message='drill 20261125T030000Z FAILED: RTO 900 s > 600 s'))
    failed = run(run_module, fake_agent, 'drill')
    assert failed.failed
    assert failed.result['changed'] is True
    assert failed.result['msg'] == 'drill 20261125T030000Z FAILED: RTO 900 s > 600 s'

    collected = run(run_module, fake_agent, 'drill', fail_on_error=False)
    assert not collected.failed
    assert collected.result['failed'] is False  # else Ansible fails any result with a non-zero rc
    assert collected.result['changed'] is True
    assert collected.result['rc'] == 4
    assert collected.result['result']['failures'] == ['RTO 900 s > 600 s']

    expected = run(run_module, fake_agent, 'drill', expected_rc=[0, 4])
    assert not expected.failed
    assert expected.result['failed'] is False


def test_a_drill_that_never_started_is_no_change(run_module, fake_agent):
    fake_agent.respond('drill', rc=2, error=dict(type='ConfigError', message='scratch directory not writable'))
    out = run(run_module, fake_agent, 'drill', fail_on_error=False)

    assert out.result['changed'] is False


@pytest.mark.parametrize('fields, changed', [
    (dict(deleted=[{'backup_id': BACKUP_ID}], incomplete_removed=[], uploads_aborted=[], wal=dict(deleted=0)), True),
    (dict(deleted=[], incomplete_removed=[{'backup_id': 'x'}], uploads_aborted=[], wal=dict(deleted=0)), True),
    (dict(deleted=[], incomplete_removed=[], uploads_aborted=[], wal=dict(deleted=12)), True),
    (dict(deleted=[], incomplete_removed=[], uploads_aborted=[], wal=dict(deleted=0)), False),
])
def test_prune_changes_when_it_removed_something(run_module, fake_agent, fields, changed):
    fake_agent.respond('prune', dry_run=False, kept=[], **fields)
    assert run(run_module, fake_agent, 'prune').result['changed'] is changed

    fake_agent.respond('prune', dry_run=True, kept=[], **fields)
    assert run(run_module, fake_agent, 'prune', ['--dry-run']).result['changed'] is False


def test_prune_in_check_mode_is_a_dry_run_that_predicts_the_change(run_module, fake_agent):
    fake_agent.respond('prune', dry_run=True, kept=[], deleted=[{'backup_id': BACKUP_ID}], incomplete_removed=[],
                       uploads_aborted=[], wal=dict(deleted=0))
    out = run(run_module, fake_agent, 'prune', check_mode=True)

    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'prune', '--dry-run']
    assert out.result['changed'] is True


@pytest.mark.parametrize('command', ['backup', 'restore', 'pitr', 'drill'])
def test_mutating_commands_are_skipped_in_check_mode(run_module, fake_agent, command):
    out = run(run_module, fake_agent, command, ['--anything'], check_mode=True)

    assert not out.failed
    assert not fake_agent.called()
    assert out.result['skipped'] is True
    assert out.result['changed'] is False
    assert out.result['msg'] == 'check mode: pg-backup %s was not run (it changes the repository or a server)' % command


@pytest.mark.parametrize('args', [['--format', 'nagios'], ['--format=prometheus']])
def test_health_in_another_format_than_json_is_refused(run_module, fake_agent, args):
    out = run(run_module, fake_agent, 'health', args)

    assert out.failed
    assert 'prints none' in out.result['msg']
    assert not fake_agent.called()


def test_an_unsupported_schema_version_fails_before_anything_is_read(run_module, fake_agent):
    fake_agent.respond('list', schema_version=2, backups=[])
    out = run(run_module, fake_agent, 'list')

    assert out.failed
    assert 'schema_version 2' in out.result['msg']
    assert 'result' not in out.result


@pytest.mark.parametrize('command', ['wal-push', 'wal-fetch', 'exit-codes', 'config reference'])
def test_commands_of_postgresql_and_tools_are_not_offered(run_module, fake_agent, command):
    out = run(run_module, fake_agent, command)

    assert out.failed
    assert 'value of command must be one of' in out.result['msg']
    assert not fake_agent.called()


def test_compliance_report_is_read_only_unless_it_writes_a_file(run_module, fake_agent):
    for check_mode in (False, True):
        fake_agent.respond('compliance report', format='json', report={'schema_version': 1})
        out = run(run_module, fake_agent, 'compliance report', ['--format', 'json', '--period', '90d'],
                  check_mode=check_mode)
        assert not out.failed and out.result['changed'] is False
        assert fake_agent.argv()[3:] == ['compliance', 'report', '--format', 'json', '--period', '90d']

    fake_agent.respond('compliance report', format='pdf', output='/tmp/r.pdf', bytes=100)
    assert run(run_module, fake_agent, 'compliance report', ['--format', 'pdf', '--output', '/tmp/r.pdf']
               ).result['changed'] is True
    out = run(run_module, fake_agent, 'compliance report', ['--format=pdf', '--output=/tmp/r.pdf'], check_mode=True)
    assert out.result['skipped'] is True and out.result['changed'] is False
    assert fake_agent.argv()[-1] == '/tmp/r.pdf'          # the last call was the one before: nothing ran
