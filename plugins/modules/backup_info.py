#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_info
short_description: List the backups of a PostgreSQL cluster kept by the pg-backup agent
description:
  - Runs C(pg-backup list) on the managed host and returns every committed backup of the cluster
    named by O(config), oldest first, with a summary per tier (count, stored bytes, oldest and newest
    backup, age of the newest).
  - Reads the repository only; never changes anything, so it runs in check mode too.
version_added: 0.1.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.agent
  - miometry.pg_backup.attributes
  - miometry.pg_backup.attributes.read_only
options:
  tier:
    description:
      - Only list backups of this tier.
      - Without it every tier is listed and RV(tiers) has an entry for each of V(daily), V(weekly) and V(monthly).
    type: str
    choices: [daily, weekly, monthly]
seealso:
  - module: miometry.pg_backup.backup_checksum
    description: Re-hash (and deeply check) the stored objects of the backups listed here.
  - module: miometry.pg_backup.backup_health
    description: Freshness, size and storage checks with warning and critical levels.
'''

EXAMPLES = r'''
- name: List the backups of the main cluster
  miometry.pg_backup.backup_info:
    config: /etc/pg-backup/main.yml
  become: true
  become_user: postgres
  register: main_backups

- name: Require a daily backup younger than 26 hours
  ansible.builtin.assert:
    that:
      - main_backups.tiers.daily.count > 0
      - main_backups.tiers.daily.newest_age_hours < 26
    fail_msg: "newest daily backup: {{ main_backups.tiers.daily.newest }}"

- name: List only monthly backups, with the agent installed by the agent role
  miometry.pg_backup.backup_info:
    agent_path: "{{ agent_bin }}"
    config: "{{ agent_config_files['main'] }}"
    tier: monthly
  register: monthly

- name: Show the ids of the monthly backups
  ansible.builtin.debug:
    msg: "{{ monthly.backups | map(attribute='backup_id') | list }}"
'''

RETURN = r'''
backups:
  description: Committed backups, oldest first, as C(pg-backup --json list) reports them.
  returned: success
  type: list
  elements: dict
  contains:
    backup_id:
      description: Backup id; ids sort by time.
      type: str
      sample: 20261125T020000Z-logical-daily
    kind:
      description: Kind of backup.
      type: str
      sample: logical
    tier:
      description: Retention tier.
      type: str
      sample: daily
    cluster:
      description: Cluster name in the repository.
      type: str
      sample: main
    started_at:
      description: Start of the backup (UTC, ISO 8601).
      type: str
      sample: '2026-11-25T02:00:00.123456Z'
    finished_at:
      description: End of the backup (UTC, ISO 8601).
      type: str
      sample: '2026-11-25T02:03:10.654321Z'
    stored_bytes:
      description: Bytes stored (compressed and encrypted) for this backup.
      type: int
      sample: 2418794
    raw_bytes:
      description: Bytes dumped before compression.
      type: int
      sample: 7992493
    databases:
      description: Databases in the backup.
      type: list
      elements: str
      sample: [app, postgres]
    server_version:
      description: PostgreSQL server version the backup was taken from.
      type: str
      sample: 15.18 (Debian 15.18-0+deb12u1)
    key_fingerprint:
      description: Fingerprint of the key needed to read the backup.
      type: str
      sample: scrypt:7dd93c3ef1adda5ecf95419d0fa4ba77
    encryption_mode:
      description: C(public-key) or C(passphrase).
      type: str
      sample: passphrase
tiers:
  description:
    - Summary per tier, keyed by tier name. Always has V(daily), V(weekly) and V(monthly) (only O(tier) when it
      is set), with RV(tiers.count=0) and null backup ids and ages for a tier without backups.
  returned: success
  type: dict
  contains:
    count:
      description: Number of backups of the tier.
      type: int
      sample: 30
    stored_bytes:
      description: Bytes stored by the backups of the tier.
      type: int
      sample: 72563820
    oldest:
      description: Id of the oldest backup of the tier, or null.
      type: str
      sample: 20261026T020000Z-logical-daily
    newest:
      description: Id of the newest backup of the tier, or null.
      type: str
      sample: 20261125T020000Z-logical-daily
    newest_started_at:
      description: Start time of the newest backup of the tier (UTC, ISO 8601), or null.
      type: str
      sample: '2026-11-25T02:00:00.123456Z'
    newest_age_hours:
      description:
        - Hours between the start of the newest backup and now on the managed host, rounded to 0.001, or null.
      type: float
      sample: 5.25
  sample:
    daily: {count: 2, stored_bytes: 4837588, oldest: 20261124T020000Z-logical-daily,
            newest: 20261125T020000Z-logical-daily, newest_started_at: '2026-11-25T02:00:00.123456Z',
            newest_age_hours: 5.25}
    weekly: {count: 0, stored_bytes: 0, oldest: null, newest: null, newest_started_at: null, newest_age_hours: null}
    monthly: {count: 0, stored_bytes: 0, oldest: null, newest: null, newest_started_at: null, newest_age_hours: null}
total_stored_bytes:
  description: Bytes stored by all listed backups.
  returned: success
  type: int
  sample: 4837588
repository:
  description: Location of the cluster in the repository (directory or C(s3://) URL).
  returned: success
  type: str
  sample: /var/backups/pg-backup/main/
agent_command:
  description: The agent command line the module ran.
  returned: always
  type: list
  elements: str
  sample: [/opt/pg-backup/bin/pg-backup, --config, /etc/pg-backup/main.yml, --json, list]
'''

import datetime

from ansible.module_utils.basic import AnsibleModule

from ..module_utils.agent_client import agent_argument_spec, agent_command, run_agent

TIERS = ('daily', 'weekly', 'monthly')


def parse_utc(timestamp):
    """Parse the agent's ISO 8601 UTC time (``2026-11-25T06:45:59.895415Z``, fraction optional)."""
    text = timestamp.rstrip('Z')
    fmt = '%Y-%m-%dT%H:%M:%S.%f' if '.' in text else '%Y-%m-%dT%H:%M:%S'
    return datetime.datetime.strptime(text, fmt)


def summarize(backups, tiers, now):
    """Per-tier counts, bytes, oldest/newest ids and the age of the newest backup in hours."""
    summary = {}
    names = list(tiers) + sorted(set(b.get('tier') for b in backups) - set(tiers) - set([None]))
    for tier in names:
        of_tier = sorted((b for b in backups if b.get('tier') == tier), key=lambda b: parse_utc(b['started_at']))
        entry = dict(count=len(of_tier), stored_bytes=sum(int(b.get('stored_bytes') or 0) for b in of_tier),
                     oldest=None, newest=None, newest_started_at=None, newest_age_hours=None)
        if of_tier:
            newest = of_tier[-1]
            age = now - parse_utc(newest['started_at'])
            entry.update(oldest=of_tier[0]['backup_id'], newest=newest['backup_id'],
                         newest_started_at=newest['started_at'],
                         newest_age_hours=round(age.total_seconds() / 3600.0, 3))
        summary[tier] = entry
    return summary


def utcnow():
    # Naive UTC, like parse_utc's results; datetime.utcnow() is deprecated on newer Pythons.
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def main():
    argument_spec = agent_argument_spec()
    argument_spec.update(
        tier=dict(type='str', choices=list(TIERS)),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    args = ['list']
    if module.params['tier']:
        args += ['--tier', module.params['tier']]
    cmd = agent_command(module, args)
    document = run_agent(module, args)[1]

    backups = document.get('backups') or []
    tiers = summarize(backups, [module.params['tier']] if module.params['tier'] else TIERS, utcnow())
    module.exit_json(
        changed=False,
        backups=backups,
        tiers=tiers,
        total_stored_bytes=sum(t['stored_bytes'] for t in tiers.values()),
        repository=document.get('repository'),
        agent_command=cmd,
    )


if __name__ == '__main__':
    main()
