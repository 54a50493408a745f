# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime

from ansible_collections.miometry.pg_backup.plugins.modules import backup_info

CONFIG = '/etc/pg-backup/main.yml'


def backup(backup_id, tier, started_at, stored_bytes):
    return dict(backup_id=backup_id, kind='logical', tier=tier, cluster='main', started_at=started_at,
                finished_at=started_at, stored_bytes=stored_bytes, raw_bytes=stored_bytes * 3,
                databases=['app'], server_version='15.18', key_fingerprint='scrypt:00', encryption_mode='passphrase')


def iso(moment):
    return moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


NOW = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
BACKUPS = [
    backup('20261101T040000Z-logical-monthly', 'monthly', '2026-11-01T04:00:00Z', 500),
    backup('20261124T020000Z-logical-daily', 'daily', iso(NOW - datetime.timedelta(hours=30)), 100),
    backup('20261125T020000Z-logical-daily', 'daily', iso(NOW - datetime.timedelta(hours=6)), 120),
]


def test_lists_backups_and_summarizes_every_tier(run_module, fake_agent):
    fake_agent.respond('list', repository='/var/backups/pg-backup/main/', backups=BACKUPS)
    out = run_module(backup_info.main, dict(agent_path=fake_agent.path, config=CONFIG))

    assert not out.failed
    assert out.result['changed'] is False
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'list']
    assert out.result['backups'] == BACKUPS
    assert out.result['repository'] == '/var/backups/pg-backup/main/'
    assert out.result['total_stored_bytes'] == 720
    tiers = out.result['tiers']
    assert sorted(tiers) == ['daily', 'monthly', 'weekly']
    assert tiers['daily']['count'] == 2
    assert tiers['daily']['stored_bytes'] == 220
    assert tiers['daily']['oldest'] == '20261124T020000Z-logical-daily'
    assert tiers['daily']['newest'] == '20261125T020000Z-logical-daily'
    assert 5.9 < tiers['daily']['newest_age_hours'] < 6.1
    assert tiers['monthly']['oldest'] == tiers['monthly']['newest'] == '20261101T040000Z-logical-monthly'
    assert tiers['weekly'] == dict(count=0, stored_bytes=0, oldest=None, newest=None, newest_started_at=None,
                                   newest_age_hours=None)
    assert out.result['agent_command'] == [fake_agent.path, '--config', CONFIG, '--json', 'list']


def test_tier_option_filters_in_the_agent_and_summarizes_that_tier_only(run_module, fake_agent):
    fake_agent.respond('list', repository='/r/main/', backups=BACKUPS[1:])
    out = run_module(backup_info.main, dict(agent_path=fake_agent.path, config=CONFIG, tier='daily'))

    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'list', '--tier', 'daily']
    assert list(out.result['tiers']) == ['daily']
    assert out.result['total_stored_bytes'] == 220


def test_empty_repository(run_module, fake_agent):
    fake_agent.respond('list', repository='/r/main/', backups=[])
    out = run_module(backup_info.main, dict(agent_path=fake_agent.path, config=CONFIG))

    assert not out.failed
    assert out.result['backups'] == []
    assert out.result['total_stored_bytes'] == 0
    assert all(t['count'] == 0 and t['newest'] is None for t in out.result['tiers'].values())


def test_runs_in_check_mode_and_reports_no_change(run_module, fake_agent):
    fake_agent.respond('list', repository='/r/main/', backups=BACKUPS)
    out = run_module(backup_info.main, dict(agent_path=fake_agent.path, config=CONFIG), check_mode=True)

    assert not out.failed
    assert fake_agent.called()
    assert out.result['changed'] is False
    assert out.result['tiers']['daily']['count'] == 2


def test_agent_error_fails_with_the_agents_message(run_module, fake_agent):
    fake_agent.respond('list', rc=5, error=dict(type='StorageError', message='storage unreachable: timeout; check the endpoint'))
    out = run_module(backup_info.main, dict(agent_path=fake_agent.path, config=CONFIG))

    assert out.failed
    assert out.result['msg'] == 'storage unreachable: timeout; check the endpoint'
    assert out.result['exit_code'] == 5
    assert out.result['error_type'] == 'StorageError'


def test_missing_agent_says_how_to_install_it(run_module, tmp_path):
    out = run_module(backup_info.main, dict(agent_path=str(tmp_path / 'bin' / 'pg-backup'), config=CONFIG))

    assert out.failed
    assert 'miometry.pg_backup.agent role' in out.result['msg']


def test_config_is_required(run_module, fake_agent):
    out = run_module(backup_info.main, dict(agent_path=fake_agent.path))

    assert out.failed
    assert 'config' in out.result['msg']
    assert not fake_agent.called()
