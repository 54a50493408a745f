# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.miometry.pg_backup.plugins.modules import backup_checksum

CONFIG = '/etc/pg-backup/main.yml'
B1 = '20261124T020000Z-logical-daily'
B2 = '20261125T020000Z-logical-daily'


def obj(name, error=None):
    entry = dict(object=name, size=10, sha256='ab' * 32, ok=error is None)
    if error:
        entry['error'] = error
    return entry


def report(backup_id, *objects, **kwargs):
    return dict(backup_id=backup_id, deep=kwargs.get('deep', False), ok=all(o['ok'] for o in objects), objects=list(objects))


def test_verifies_all_backups_deeply(run_module, fake_agent):
    fake_agent.respond('verify', backups=[report(B1, obj('db-0001-app.dump.zst.gpg'), deep=True),
                                          report(B2, obj('db-0001-app.dump.zst.gpg'), deep=True)],
                       verified=2, failed=0)
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, all=True, deep=True))

    assert not out.failed
    assert out.result['changed'] is False
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'verify', '--all', '--deep']
    assert out.result['verified'] == 2
    assert out.result['failed_count'] == 0
    assert out.result['failed_objects'] == []
    first = out.result['backups'][0]['objects'][0]
    assert first == dict(object='db-0001-app.dump.zst.gpg', size=10, sha256='ab' * 32, ok=True, error=None)


def test_verifies_one_backup_by_id(run_module, fake_agent):
    fake_agent.respond('verify', backups=[report(B1, obj('globals.sql.zst.gpg'))], verified=1, failed=0)
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, backup_id=B1))

    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'verify', B1]
    assert out.result['backups'][0]['backup_id'] == B1


def test_integrity_failure_fails_naming_the_first_object_and_keeps_every_result(run_module, fake_agent):
    bad = [obj('db-0001-app.dump.zst.gpg', 'sha256 mismatch'), obj('db-0002-b.dump.zst.gpg', 'size 3 differs')]
    fake_agent.respond('verify', rc=4, backups=[report(B1, obj('globals.sql.zst.gpg')), report(B2, *bad)],
                       verified=2, failed=1,
                       error=dict(type='IntegrityError', message='integrity failure: %s/db-0001-app.dump.zst.gpg: sha256 mismatch' % B2))
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, all=True))

    assert out.failed
    assert out.result['msg'] == 'integrity failure: %s/db-0001-app.dump.zst.gpg: sha256 mismatch (and 1 more)' % B2
    assert out.result['exit_code'] == 4
    assert out.result['error_type'] == 'IntegrityError'
    assert out.result['failed_objects'] == ['%s/db-0001-app.dump.zst.gpg: sha256 mismatch' % B2,
                                            '%s/db-0002-b.dump.zst.gpg: size 3 differs' % B2]
    assert out.result['verified'] == 2
    assert out.result['failed_count'] == 1
    assert [b['ok'] for b in out.result['backups']] == [True, False]
    assert out.result['backups'][0]['objects'][0]['error'] is None


def test_failed_objects_are_named_once_when_the_agents_error_already_names_them(run_module, fake_agent):
    error = '%s/db-0001-app.dump.zst.gpg: SHA-256 00 differs from the manifest\'s ab' % B1
    fake_agent.respond('verify', rc=4, backups=[report(B1, obj('db-0001-app.dump.zst.gpg', error))], verified=1, failed=1,
                       error=dict(type='IntegrityError', message='integrity failure: %s/db-0001-app.dump.zst.gpg: %s' % (B1, error)))
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, backup_id=B1))

    assert out.failed
    assert out.result['failed_objects'] == [error]
    assert out.result['msg'] == 'integrity failure: ' + error


def test_integrity_failure_without_object_results_uses_the_agents_message(run_module, fake_agent):
    fake_agent.respond('verify', rc=4, error=dict(type='IntegrityError', message='manifest of %s is not a valid manifest' % B1))
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, backup_id=B1))

    assert out.failed
    assert out.result['msg'] == 'manifest of %s is not a valid manifest' % B1
    assert out.result['exit_code'] == 4


def test_other_agent_errors_fail_with_the_agents_message(run_module, fake_agent):
    fake_agent.respond('verify', rc=7, error=dict(type='NotFoundError', message='backup nope does not exist'))
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, backup_id='nope'))

    assert out.failed
    assert out.result['msg'] == 'backup nope does not exist'
    assert out.result['exit_code'] == 7
    assert out.result['error_type'] == 'NotFoundError'
    assert out.result['backups'] == []


def test_runs_in_check_mode(run_module, fake_agent):
    fake_agent.respond('verify', backups=[report(B1, obj('globals.sql.zst.gpg'))], verified=1, failed=0)
    out = run_module(backup_checksum.main, dict(agent_path=fake_agent.path, config=CONFIG, all=True), check_mode=True)

    assert not out.failed
    assert fake_agent.called()
    assert out.result['changed'] is False
    assert out.result['verified'] == 1


@pytest.mark.parametrize('args, message', [
    (dict(), 'one of the following is required: backup_id, all'),
    (dict(backup_id=B1, all=True), 'parameters are mutually exclusive: backup_id|all'),
    (dict(all=False), 'nothing to verify'),
])
def test_needs_exactly_one_of_backup_id_and_all(run_module, fake_agent, args, message):
    args.update(agent_path=fake_agent.path, config=CONFIG)
    out = run_module(backup_checksum.main, args)

    assert out.failed
    assert message in out.result['msg']
    assert not fake_agent.called()
