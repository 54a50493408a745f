# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of wal_settings against a stand-in psql that keeps pg_settings in a JSON file.

The real server is exercised by the Molecule ``pitr`` scenario (the wal_archiving role)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import stat
import sys

import pytest

from ansible_collections.miometry.pg_backup.plugins.modules import wal_settings

FAKE_PSQL = r'''#!{python}
import json, os, re, sys
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "state.json")
with open(path) as f:
    state = json.load(f)
sql = sys.stdin.read()
with open(os.path.join(here, "calls.log"), "a") as f:
    f.write(sql + "\n--\n")
for name, value in re.findall(r"ALTER SYSTEM SET (\w+) = '((?:[^']|'')*)';", sql):
    row = state["settings"][name]
    value = value.replace("''", "'")
    if row["context"] == "postmaster":
        row["pending_restart"] = row["setting"] != value
    else:
        row["setting"] = value
with open(path, "w") as f:
    json.dump(state, f)
if "json_build_object" in sql:
    names = re.search(r"string_to_array\('([^']*)'", sql).group(1).split(",")
    out = dict(state)
    out["settings"] = dict((n, state["settings"][n]) for n in names if n in state["settings"])
    sys.stdout.write(json.dumps(out) + "\n")
'''

WANTED = dict(wal_level='replica', archive_mode='on', archive_command='/opt/pg-backup/bin/pg-backup --config '
              "'/etc/pg-backup/it''s.yml' wal-push %p", archive_timeout=60)


def row(setting, context='sighup'):
    return dict(setting=setting, context=context, pending_restart=False)


@pytest.fixture
def psql(tmp_path):
    path = tmp_path / 'psql'
    path.write_text(FAKE_PSQL.replace('{python}', sys.executable))
    os.chmod(str(path), stat.S_IRWXU)

    def set_state(in_recovery=False, **settings):
        state = dict(in_recovery=in_recovery, data_directory='/srv/pg', server_version_num=150010,
                     settings=dict(wal_level=row('replica', 'postmaster'), archive_mode=row('off', 'postmaster'),
                                   archive_command=row('(disabled)'), archive_timeout=row('0')))
        state['settings'].update(settings)
        (tmp_path / 'state.json').write_text(json.dumps(state))

    def calls():
        log = tmp_path / 'calls.log'
        return log.read_text().split('\n--\n')[:-1] if log.exists() else []

    set_state()
    return dict(path=str(path), set_state=set_state, calls=calls,
                state=lambda: json.loads((tmp_path / 'state.json').read_text()))


def args(psql, **extra):
    return dict(dict(psql=psql['path'], settings=WANTED), **extra)


def test_first_run_changes_what_differs_and_reports_the_restart(run_module, psql):
    out = run_module(wal_settings.main, args(psql))

    assert not out.failed
    assert out.result['changed'] is True
    assert out.result['changed_settings'] == ['archive_command', 'archive_mode', 'archive_timeout']
    assert out.result['pending_restart'] is True
    assert out.result['restart_settings'] == ['archive_mode']
    assert out.result['data_directory'] == '/srv/pg'
    state = psql['state']()['settings']
    assert state['archive_command']['setting'] == WANTED['archive_command']  # quote doubled and undone
    assert state['archive_timeout']['setting'] == '60'
    assert any('pg_reload_conf()' in c for c in psql['calls']())
    assert "archive_mode = 'on'" in out.result['diff']['after']


def test_second_run_changes_nothing(run_module, psql):
    psql['set_state'](archive_mode=row('on', 'postmaster'), archive_command=row(WANTED['archive_command']),
                      archive_timeout=row('60'))
    out = run_module(wal_settings.main, args(psql))

    assert out.result['changed'] is False
    assert out.result['pending_restart'] is False
    assert not any('ALTER SYSTEM' in c for c in psql['calls']())


def test_check_mode_reports_without_changing(run_module, psql):
    out = run_module(wal_settings.main, args(psql), check_mode=True)

    assert out.result['changed'] is True
    assert out.result['pending_restart'] is True
    assert out.result['restart_settings'] == ['archive_mode']
    assert not any('ALTER SYSTEM' in c for c in psql['calls']())
    assert psql['state']()['settings']['archive_mode']['setting'] == 'off'


def test_wal_level_logical_is_kept(run_module, psql):
    psql['set_state'](wal_level=row('logical', 'postmaster'))
    out = run_module(wal_settings.main, args(psql))

    assert 'wal_level' not in out.result['changed_settings']
    assert out.result['after']['wal_level'] == 'logical'


def test_minimal_wal_level_is_raised(run_module, psql):
    psql['set_state'](wal_level=row('minimal', 'postmaster'))
    out = run_module(wal_settings.main, args(psql))

    assert 'wal_level' in out.result['changed_settings']
    assert 'wal_level' in out.result['restart_settings']


def test_standby_fails_by_default_and_skips_on_request(run_module, psql):
    psql['set_state'](in_recovery=True)
    out = run_module(wal_settings.main, args(psql))
    assert out.failed
    assert 'standby' in out.result['msg'] and 'archive_mode' in out.result['msg']

    out = run_module(wal_settings.main, args(psql, standby='skip'))
    assert not out.failed
    assert out.result['changed'] is False
    assert out.result['skipped_on_standby'] is True
    assert not any('ALTER SYSTEM' in c for c in psql['calls']())


def test_unknown_setting_is_one_clear_error(run_module, psql):
    out = run_module(wal_settings.main, args(psql, settings=dict(archive_timeot=60)))
    assert out.failed
    assert 'unknown PostgreSQL setting' in out.result['msg'] and 'archive_timeot' in out.result['msg']


@pytest.mark.parametrize('value, expected', [(True, 'on'), (False, 'off'), (60, '60'), (' on ', 'on')])
def test_normalize(value, expected):
    assert wal_settings.normalize(value) == expected


def test_sql_literal_doubles_quotes():
    assert wal_settings.sql_literal("a'b") == "'a''b'"
