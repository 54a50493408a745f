# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.miometry.pg_backup.plugins.modules import backup_health

CONFIG = '/etc/pg-backup/main.yml'


def check(name, status, message, value=None, warning=None, critical=None):
    return dict(name=name, status=status, message=message, value=value, warning=warning, critical=critical)


OK = check('storage', 'ok', 'storage reachable')
STALE = check('freshness_daily', 'critical', 'newest daily backup is 60.0 h old (limit 26 h)', 60.0, 26.0, 52.0)
NO_WEEKLY = check('freshness_weekly', 'warning', 'no weekly backup in the repository', None, 192.0, 384.0)


def respond(fake_agent, status, *checks):
    fake_agent.respond('health', cluster='main', status=status, checks=list(checks))


def test_healthy_cluster(run_module, fake_agent):
    respond(fake_agent, 'ok', OK)
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG))

    assert not out.failed
    assert out.result['changed'] is False
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'health']
    assert out.result['status'] == 'ok'
    assert out.result['cluster'] == 'main'
    assert out.result['checks'] == [OK]
    assert out.result['problems'] == []


def test_critical_fails_by_default_listing_the_checks_that_are_not_ok(run_module, fake_agent):
    respond(fake_agent, 'critical', OK, STALE, NO_WEEKLY)
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG))

    assert out.failed
    assert out.result['msg'] == ('backup health of cluster main is CRITICAL: '
                                 'freshness_daily (critical): newest daily backup is 60.0 h old (limit 26 h); '
                                 'freshness_weekly (warning): no weekly backup in the repository')
    assert out.result['status'] == 'critical'
    assert out.result['checks'] == [OK, STALE, NO_WEEKLY]
    assert len(out.result['problems']) == 2


@pytest.mark.parametrize('status, fail_on, fails', [
    ('ok', 'warning', False),
    ('unknown', 'warning', False),
    ('warning', 'critical', False),
    ('warning', 'warning', True),
    ('critical', 'warning', True),
    ('critical', 'critical', True),
    ('critical', 'never', False),
])
def test_fail_on_threshold(run_module, fake_agent, status, fail_on, fails):
    respond(fake_agent, status, check('x', status, 'is %s' % status))
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG, fail_on=fail_on))

    assert out.failed is fails
    assert out.result['status'] == status


def test_max_age_hours_are_passed_per_tier(run_module, fake_agent):
    respond(fake_agent, 'ok', OK)
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG,
                                              max_age_hours=dict(weekly=170, daily='12.5')))

    assert not out.failed
    assert fake_agent.argv() == ['--config', CONFIG, '--json', 'health',
                                 '--max-age-hours', 'daily=12.5', '--max-age-hours', 'weekly=170.0']


@pytest.mark.parametrize('max_age_hours, message', [
    (dict(hourly=1), "unknown tier 'hourly'"),
    (dict(daily=0), 'max_age_hours.daily: expected a positive number'),
    (dict(daily='soon'), 'max_age_hours.daily: expected a positive number'),
])
def test_invalid_max_age_hours_fail_before_running_the_agent(run_module, fake_agent, max_age_hours, message):
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG, max_age_hours=max_age_hours))

    assert out.failed
    assert message in out.result['msg']
    assert not fake_agent.called()


def test_agent_errors_fail_even_with_fail_on_never(run_module, fake_agent):
    fake_agent.respond('health', rc=2, error=dict(type='ConfigError', message='configuration file /x does not exist'))
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG, fail_on='never'))

    assert out.failed
    assert out.result['msg'] == 'configuration file /x does not exist'
    assert out.result['exit_code'] == 2


def test_runs_in_check_mode(run_module, fake_agent):
    respond(fake_agent, 'warning', NO_WEEKLY)
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG), check_mode=True)

    assert not out.failed
    assert fake_agent.called()
    assert out.result['status'] == 'warning'


def test_schema_version_mismatch_fails(run_module, fake_agent):
    fake_agent.respond('health', schema_version=2, cluster='main', status='ok', checks=[])
    out = run_module(backup_health.main, dict(agent_path=fake_agent.path, config=CONFIG))

    assert out.failed
    assert 'schema_version 2' in out.result['msg']
