#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_health
short_description: Evaluate the backup health of a PostgreSQL cluster with the pg-backup agent
description:
  - Runs C(pg-backup health) on the managed host and returns the overall status and every check the agent
    evaluated (freshness of the newest logical and physical backup per tier, the last run of each operation,
    size change of the newest backup per database, WAL archiving - archiver failures, age of the newest
    archived WAL, gaps and conflicting pushes - storage reachability and region, free disk, and the age of the
    last successful restore verification).
  - Fails when the overall status is at or above O(fail_on), listing the checks that are not V(ok).
    The agent ranks V(unknown) between V(ok) and V(warning), so it fails neither level.
  - Only reads, so it runs in check mode too.
version_added: 0.1.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.agent
  - miometry.pg_backup.attributes
  - miometry.pg_backup.attributes.read_only
options:
  max_age_hours:
    description:
      - Freshness thresholds in hours per tier, overriding the agent configuration's C(health.max_age_hours).
      - Keys are V(daily), V(weekly) or V(monthly); a backup older than the value is a warning, twice as old is critical.
      - Passed to the agent as C(--max-age-hours TIER=HOURS).
    type: dict
  fail_on:
    description:
      - V(critical) fails the task when the overall status is critical.
      - V(warning) fails it when the status is warning or critical.
      - V(never) only reports the status. Errors of the agent itself (for example an invalid configuration) fail the task whatever this is.
    type: str
    choices: [critical, warning, never]
    default: critical
seealso:
  - module: miometry.pg_backup.backup_info
    description: The backups the freshness checks look at.
  - module: miometry.pg_backup.backup_checksum
    description: Verify the stored backups' checksums.
'''

EXAMPLES = r'''
- name: Fail when the backups of the main cluster are in a critical state
  miometry.pg_backup.backup_health:
    config: /etc/pg-backup/main.yml
  become: true
  become_user: postgres

- name: Stricter freshness for this run, fail on warnings too
  miometry.pg_backup.backup_health:
    agent_path: "{{ agent_bin }}"
    config: /etc/pg-backup/main.yml
    max_age_hours:
      daily: 12
      weekly: 170
    fail_on: warning

- name: Only report
  miometry.pg_backup.backup_health:
    config: /etc/pg-backup/main.yml
    fail_on: never
  register: health

- name: Show the checks that are not ok
  ansible.builtin.debug:
    var: health.problems
  when: health.status != 'ok'
'''

RETURN = r'''
status:
  description: Worst status of all checks.
  returned: success, or failure because of O(fail_on)
  type: str
  sample: ok
cluster:
  description: Cluster name from the agent configuration.
  returned: success, or failure because of O(fail_on)
  type: str
  sample: main
checks:
  description: Every check the agent evaluated.
  returned: success, or failure because of O(fail_on)
  type: list
  elements: dict
  contains:
    name:
      description:
        - Check name, for example C(freshness_daily), C(freshness_physical_daily), C(size_daily),
          C(last_run_backup_daily), C(storage), C(local_disk), C(wal_archiver), C(wal_newest_age), C(wal_gaps),
          C(wal_conflicts), C(restore_verification).
      type: str
      sample: freshness_daily
    status:
      description: One of V(ok), V(warning), V(critical), V(unknown).
      type: str
      sample: ok
    message:
      description: What the check found.
      type: str
      sample: newest daily backup 20261125T020000Z-logical-daily is 5.2 h old (limit 26 h)
    value:
      description: Measured value (hours, percent), or null.
      type: float
      sample: 5.2
    warning:
      description: Warning threshold, or null.
      type: float
      sample: 26.0
    critical:
      description: Critical threshold, or null.
      type: float
      sample: 52.0
    labels:
      description: Labels of the check (for example C(tier)), when it has any.
      type: dict
      returned: when the check has labels
      sample: {tier: daily}
problems:
  description: 'Every check that is not V(ok), as C(NAME (STATUS): MESSAGE).'
  returned: success, or failure because of O(fail_on)
  type: list
  elements: str
  sample: ["freshness_weekly (warning): no weekly backup in the repository"]
exit_code:
  description: The agent's exit code when the agent itself failed (for example 2 for a configuration error).
  returned: failure
  type: int
  sample: 2
error_type:
  description: The agent's error class when the agent itself failed.
  returned: failure
  type: str
  sample: ConfigError
agent_command:
  description: The agent command line the module ran.
  returned: always
  type: list
  elements: str
  sample: [/opt/pg-backup/bin/pg-backup, --config, /etc/pg-backup/main.yml, --json, health, --max-age-hours, daily=12.0]
'''

from ansible.module_utils.basic import AnsibleModule

from ..module_utils.agent_client import agent_argument_spec, agent_command, run_agent

TIERS = ('daily', 'weekly', 'monthly')
# The agent's ranking: unknown is worse than ok but alerts at neither level.
RANK = {'ok': 0, 'unknown': 1, 'warning': 2, 'critical': 3}
FAIL_RANK = {'warning': RANK['warning'], 'critical': RANK['critical'], 'never': None}


def max_age_arguments(module, max_age_hours):
    args = []
    for tier in sorted(max_age_hours or {}):
        if tier not in TIERS:
            module.fail_json(msg='max_age_hours: unknown tier %r; expected %s' % (tier, ', '.join(TIERS)))
        try:
            hours = float(max_age_hours[tier])
        except (TypeError, ValueError):
            hours = 0.0
        if not hours > 0:
            module.fail_json(msg='max_age_hours.%s: expected a positive number of hours, got %r' % (tier, max_age_hours[tier]))
        args += ['--max-age-hours', '%s=%r' % (tier, hours)]
    return args


def main():
    argument_spec = agent_argument_spec()
    argument_spec.update(
        max_age_hours=dict(type='dict'),
        fail_on=dict(type='str', choices=list(FAIL_RANK), default='critical'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    args = ['health'] + max_age_arguments(module, module.params['max_age_hours'])
    cmd = agent_command(module, args)
    document = run_agent(module, args)[1]

    status = document.get('status', 'unknown')
    checks = document.get('checks') or []
    problems = ['%s (%s): %s' % (c.get('name'), c.get('status'), c.get('message')) for c in checks if c.get('status') != 'ok']
    results = dict(status=status, cluster=document.get('cluster'), checks=checks, problems=problems, agent_command=cmd)

    threshold = FAIL_RANK[module.params['fail_on']]
    if threshold is not None and RANK.get(status, RANK['unknown']) >= threshold:
        module.fail_json(msg='backup health of cluster %s is %s: %s'
                         % (results['cluster'], status.upper(), '; '.join(problems) or 'no detail'), **results)
    module.exit_json(changed=False, **results)


if __name__ == '__main__':
    main()
