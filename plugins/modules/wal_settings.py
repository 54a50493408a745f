#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: wal_settings
short_description: Set PostgreSQL server settings with ALTER SYSTEM, idempotently, and report pending restarts
description:
  - Reads the current values of the named settings from C(pg_settings) with C(psql), changes only those that
    differ with C(ALTER SYSTEM SET) (written to C(postgresql.auto.conf)), reloads the configuration, and reports
    which changed settings only take effect after a restart (C(pending_restart)).
  - Made for the settings WAL archiving needs (C(wal_level), C(archive_mode), C(archive_command),
    C(archive_timeout)); any setting works. It never restarts the server itself, so a fleet rollout can defer
    restarts (the result says which settings wait for one).
  - C(wal_level) is treated as a minimum, V(minimal) < V(replica) < V(logical); a server already at V(logical)
    is left there when V(replica) is asked for.
  - A standby (in recovery) refuses C(ALTER SYSTEM); the module then fails unless O(standby) is V(skip).
  - Runs C(psql) as the connecting OS user; use C(become_user) (usually C(postgres)) for peer authentication.
version_added: 0.2.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.attributes
attributes:
  check_mode:
    support: full
    details: Reads the settings and reports what would change, and whether a restart would be needed.
  diff_mode:
    support: full
    details: Shows the changed settings before and after, one C(name = 'value') line each.
options:
  settings:
    description:
      - Settings to enforce, name to value. Values are compared with C(pg_settings.setting), in the setting's
        base unit (for example C(archive_timeout) in seconds).
    type: dict
    required: true
  psql:
    description: The C(psql) executable.
    type: path
    default: psql
  host:
    description: Host name or Unix-socket directory of the server.
    type: str
    default: /var/run/postgresql
  port:
    description: Port of the server.
    type: int
    default: 5432
  user:
    description: Role to connect as; it needs superuser or C(ALTER SYSTEM) privileges on the settings.
    type: str
    default: postgres
  dbname:
    description: Database to connect to.
    type: str
    default: postgres
  standby:
    description:
      - What to do on a standby, where C(ALTER SYSTEM) is refused. V(fail) fails the task, V(skip) reports the
        settings that differ without changing them.
    type: str
    choices: [fail, skip]
    default: fail
  reload:
    description: Reload the configuration after a change (C(pg_reload_conf())) so reloadable settings apply at once.
    type: bool
    default: true
seealso:
  - name: ALTER SYSTEM
    description: PostgreSQL's documentation of ALTER SYSTEM and postgresql.auto.conf.
    link: https://www.postgresql.org/docs/current/sql-altersystem.html
'''

EXAMPLES = r'''
- name: Archive every WAL segment with the pg-backup agent
  miometry.pg_backup.wal_settings:
    port: 5432
    settings:
      wal_level: replica
      archive_mode: "on"
      archive_command: /opt/pg-backup/bin/pg-backup --config /etc/pg-backup/main.yml wal-push %p
      archive_timeout: 60
  become: true
  become_user: postgres
  register: archiving

- name: Restart when a setting needs it
  ansible.builtin.debug:
    msg: "restart needed for {{ archiving.restart_settings }}"
  when: archiving.pending_restart
'''

RETURN = r'''
changed_settings:
  description: Settings whose value was (or in check mode would be) changed.
  returned: always
  type: list
  elements: str
  sample: [archive_mode, archive_command]
pending_restart:
  description: Whether a changed setting only takes effect after a server restart.
  returned: always
  type: bool
  sample: true
restart_settings:
  description: The settings waiting for a restart.
  returned: always
  type: list
  elements: str
  sample: [archive_mode]
before:
  description: Values before the change, name to value.
  returned: always
  type: dict
after:
  description: Values after the change (in check mode, the values that would be set), name to value.
  returned: always
  type: dict
in_recovery:
  description: Whether the server is a standby.
  returned: always
  type: bool
data_directory:
  description: The server's data directory.
  returned: always
  type: str
  sample: /var/lib/postgresql/15/main
server_version_num:
  description: The server's version number.
  returned: always
  type: int
  sample: 150010
'''

import json
import time

from ansible.module_utils.basic import AnsibleModule

WAL_LEVELS = ['minimal', 'replica', 'logical']

READ_SQL = (
    "SELECT json_build_object("
    "'settings', (SELECT json_object_agg(name, json_build_object('setting', setting, 'context', context,"
    " 'pending_restart', pending_restart)) FROM pg_settings WHERE name = ANY(string_to_array(%s, ','))),"
    "'in_recovery', pg_is_in_recovery(),"
    "'data_directory', current_setting('data_directory'),"
    "'server_version_num', current_setting('server_version_num')::int)"
)


def sql_literal(value):
    """A standard-conforming SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def normalize(value):
    """Module values as PostgreSQL reports them: booleans as on/off, everything else as text."""
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return str(value).strip()


def wanted_value(name, current, desired):
    """The value to enforce: wal_level only ever goes up."""
    if name == 'wal_level' and current in WAL_LEVELS and desired in WAL_LEVELS:
        return current if WAL_LEVELS.index(current) >= WAL_LEVELS.index(desired) else desired
    return desired


def plan_changes(current, desired):
    """Return {name: (before, after)} for the settings that differ. Unknown settings raise KeyError."""
    changes = {}
    for name, value in desired.items():
        if name not in current:
            raise KeyError(name)
        before = current[name]['setting']
        after = wanted_value(name, before, normalize(value))
        if before != after:
            changes[name] = (before, after)
    return changes


def alter_sql(changes):
    return ''.join('ALTER SYSTEM SET %s = %s;\n' % (name, sql_literal(after))
                   for name, (_before, after) in sorted(changes.items()))


def diff_text(values):
    return ''.join("%s = %s\n" % (name, sql_literal(values[name])) for name in sorted(values))


class Psql(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        self.base = [p['psql'], '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', p['host'],
                     '-p', str(p['port']), '-U', p['user'], '-d', p['dbname']]

    def run(self, sql):
        rc, out, err = self.module.run_command(self.base, data=sql, check_rc=False, binary_data=True)
        if rc != 0:
            self.module.fail_json(msg='psql failed (exit %d): %s' % (rc, (err or out).strip().splitlines()[-1:]),
                                  rc=rc)
        return out

    def read(self, names):
        sql = READ_SQL.replace('%s', sql_literal(','.join(sorted(names)))) + ';\n'
        return json.loads(self.run(sql).strip())


def main():
    module = AnsibleModule(
        argument_spec=dict(
            settings=dict(type='dict', required=True),
            psql=dict(type='path', default='psql'),
            host=dict(type='str', default='/var/run/postgresql'),
            port=dict(type='int', default=5432),
            user=dict(type='str', default='postgres'),
            dbname=dict(type='str', default='postgres'),
            standby=dict(type='str', choices=['fail', 'skip'], default='fail'),
            reload=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    desired = module.params['settings']
    if not desired:
        module.fail_json(msg='settings is empty: name at least one setting')
    psql = Psql(module)
    state = psql.read(desired.keys())
    current = state['settings'] or {}
    try:
        changes = plan_changes(current, desired)
    except KeyError as exc:
        module.fail_json(msg='unknown PostgreSQL setting %s: check the name (pg_settings has no such row)' % exc)
    before = dict((n, current[n]['setting']) for n in desired)
    after = dict(before)
    after.update(dict((n, a) for n, (_b, a) in changes.items()))
    result = dict(changed=bool(changes), changed_settings=sorted(changes), before=before, after=after,
                  in_recovery=state['in_recovery'], data_directory=state['data_directory'],
                  server_version_num=state['server_version_num'])
    if changes:
        result['diff'] = dict(before=diff_text(before), after=diff_text(after),
                              before_header='pg_settings', after_header='postgresql.auto.conf')
    already_pending = sorted(n for n in desired if current[n].get('pending_restart'))
    if changes and state['in_recovery']:
        if module.params['standby'] == 'fail':
            module.fail_json(msg='the server is a standby and refuses ALTER SYSTEM; settings that differ: %s. '
                                 'Configure the primary, or set standby=skip' % ', '.join(sorted(changes)), **result)
        result.update(changed=False, skipped_on_standby=True, pending_restart=bool(already_pending),
                      restart_settings=already_pending)
        module.exit_json(**result)
    if module.check_mode or not changes:
        predicted = sorted(set(already_pending) | set(n for n in changes if current[n]['context'] == 'postmaster'))
        result.update(pending_restart=bool(predicted), restart_settings=predicted)
        module.exit_json(**result)

    psql.run(alter_sql(changes) + ('SELECT pg_reload_conf();\n' if module.params['reload'] else ''))
    # The reload is asynchronous: read again (in a new session) until the reloadable settings show
    # their new value or are marked pending_restart.
    deadline = time.time() + 10
    while True:
        now = psql.read(desired.keys())['settings']
        settled = all(now[n]['setting'] == a or now[n]['pending_restart'] for n, (_b, a) in changes.items())
        if settled or not module.params['reload'] or time.time() > deadline:
            break
        time.sleep(0.2)
    pending = sorted(n for n in desired if now[n]['pending_restart'])
    result.update(pending_restart=bool(pending), restart_settings=pending)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
