#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_checksum
short_description: Verify stored PostgreSQL backups against their manifests with the pg-backup agent
description:
  - Runs C(pg-backup verify) on the managed host. The agent re-reads every stored object of one backup
    (O(backup_id)) or of every backup (O(all)) and compares its size and SHA-256 with the manifest.
  - With O(deep=true) the agent also decrypts each object (authenticated OpenPGP), decompresses it and has
    C(pg_restore --list) read each database archive's table of contents. This needs the secret key or
    passphrase in the agent's configuration.
  - Fails when any object does not match (the agent's exit code 4), naming the first failed object, and
    still returns the result of every object. Any other agent error fails with the agent's message.
  - Reads the repository only (the agent appends an audit record), so it reports C(changed=false)
    and runs in check mode too.
version_added: 0.1.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.agent
  - miometry.pg_backup.attributes
  - miometry.pg_backup.attributes.read_only
options:
  backup_id:
    description:
      - Id of the one backup to verify, as listed by M(miometry.pg_backup.backup_info).
      - Mutually exclusive with O(all); one of them is required.
    type: str
  all:
    description:
      - Verify every committed backup of the cluster.
      - Mutually exclusive with O(backup_id); one of them is required.
    type: bool
  deep:
    description:
      - Also decrypt, decompress and read each archive's table of contents, not only re-hash the stored bytes.
      - Reads every backup in full. Objects in GLACIER or DEEP_ARCHIVE are never retrieved by this module; the
        agent compares what the store reports without a retrieval (size, the store's SHA-256 where it keeps
        one) and reports those backups as pending their content check (RV(pending_count)).
    type: bool
    default: false
seealso:
  - module: miometry.pg_backup.backup_info
    description: List the backups to verify.
  - module: miometry.pg_backup.backup_health
    description: Freshness, size and storage checks.
'''

EXAMPLES = r'''
- name: Re-hash every backup of the main cluster
  miometry.pg_backup.backup_checksum:
    config: /etc/pg-backup/main.yml
    all: true
  become: true
  become_user: postgres

- name: Deeply verify the newest backup (decrypt, decompress, pg_restore --list)
  miometry.pg_backup.backup_checksum:
    agent_path: "{{ agent_bin }}"
    config: /etc/pg-backup/main.yml
    backup_id: "{{ main_backups.tiers.daily.newest }}"
    deep: true

- name: Verify everything, collect the failures instead of stopping
  miometry.pg_backup.backup_checksum:
    config: /etc/pg-backup/main.yml
    all: true
  register: checksums
  ignore_errors: true

- name: Report objects that do not match their manifest
  ansible.builtin.debug:
    var: checksums.failed_objects
  when: checksums is failed
'''

RETURN = r'''
backups:
  description: One entry per verified backup. Also returned when the module fails on an integrity failure.
  returned: success, or failure with exit code 4
  type: list
  elements: dict
  contains:
    backup_id:
      description: Backup id.
      type: str
      sample: 20261125T020000Z-logical-daily
    deep:
      description: Whether the backup was verified deeply.
      type: bool
      sample: false
    ok:
      description: Whether every object of the backup matched.
      type: bool
      sample: true
    objects:
      description: One entry per stored object of the backup.
      type: list
      elements: dict
      contains:
        object:
          description: Object name inside the backup.
          type: str
          sample: db-0001-app.dump.zst.gpg
        ok:
          description: Whether the object matched its manifest (and, with O(deep), decrypted and read back).
          type: bool
          sample: true
        size:
          description: Stored size in bytes according to the manifest.
          type: int
          sample: 2418100
        sha256:
          description: SHA-256 of the stored object according to the manifest.
          type: str
          sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        error:
          description: What did not match, or null.
          type: str
          sample: null
verified:
  description: Number of backups verified.
  returned: success, or failure with exit code 4
  type: int
  sample: 3
failed_count:
  description: Number of backups with at least one failed object (not C(failed), which Ansible reserves for the task's own outcome).
  returned: success, or failure with exit code 4
  type: int
  sample: 0
pending_count:
  description:
    - Number of backups with objects in an archived storage class (GLACIER, DEEP_ARCHIVE) that were verified by
      the metadata the store reports; their content check waits for a retrieval (C(pg-backup verify --retrieve)).
  returned: success, or failure with exit code 4
  type: int
  sample: 0
failed_objects:
  description: 'Every failed object as C(BACKUP_ID/OBJECT: ERROR); empty on success.'
  returned: success, or failure with exit code 4
  type: list
  elements: str
  sample: ["20261125T020000Z-logical-daily/db-0001-app.dump.zst.gpg: size 1024 differs from the manifest's 2418100"]
exit_code:
  description: The agent's exit code (4 for an integrity failure, see the agent's exit code table).
  returned: failure
  type: int
  sample: 4
error_type:
  description: The agent's error class.
  returned: failure
  type: str
  sample: IntegrityError
error_meaning:
  description: The meaning of the agent's exit code.
  returned: failure
  type: str
  sample: "integrity failure: a stored object does not match its manifest, or decryption failed authentication"
agent_command:
  description: The agent command line the module ran.
  returned: always
  type: list
  elements: str
  sample: [/opt/pg-backup/bin/pg-backup, --config, /etc/pg-backup/main.yml, --json, verify, --all]
'''

from ansible.module_utils.basic import AnsibleModule

from ..module_utils.agent_client import (EXIT_INTEGRITY, EXIT_OK, agent_argument_spec, agent_command,
                                         fail_with_agent_error, run_agent)


def object_results(document):
    """The agent's per-backup reports, with ``error`` present (null) on every object."""
    backups = []
    for report in document.get('backups') or []:
        report = dict(report)
        report['objects'] = [dict(dict(error=None), **obj) for obj in report.get('objects') or []]
        backups.append(report)
    return backups


def failure(report, obj):
    """``BACKUP_ID/OBJECT: ERROR``; the agent's errors usually start with ``BACKUP_ID/OBJECT`` already."""
    where = '%s/%s' % (report['backup_id'], obj['object'])
    error = obj.get('error') or 'failed'
    return error if error.startswith(where + ':') else '%s: %s' % (where, error)


def main():
    argument_spec = agent_argument_spec()
    argument_spec.update(
        backup_id=dict(type='str'),
        all=dict(type='bool'),
        deep=dict(type='bool', default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('backup_id', 'all')],
        required_one_of=[('backup_id', 'all')],
        supports_check_mode=True,
    )
    if not module.params['backup_id'] and not module.params['all']:
        module.fail_json(msg='nothing to verify: set backup_id, or all=true')

    args = ['verify', '--all'] if module.params['all'] else ['verify', module.params['backup_id']]
    if module.params['deep']:
        args.append('--deep')
    cmd = agent_command(module, args)
    rc, document = run_agent(module, args, fail_on_error=False)

    backups = object_results(document)
    failed_objects = [failure(b, o) for b in backups for o in b['objects'] if not o['ok']]
    results = dict(
        backups=backups,
        verified=document.get('verified', len(backups)),
        failed_count=document.get('failed', len([b for b in backups if not b.get('ok')])),
        failed_objects=failed_objects,
        pending_count=document.get('pending', 0),
        agent_command=cmd,
    )
    if rc == EXIT_INTEGRITY and failed_objects:
        more = ' (and %d more)' % (len(failed_objects) - 1) if len(failed_objects) > 1 else ''
        fail_with_agent_error(module, rc, document, msg='integrity failure: %s%s' % (failed_objects[0], more), **results)
    if rc != EXIT_OK:
        # Exit code 4 without per-object results: e.g. an unreadable manifest; the agent's message names it.
        fail_with_agent_error(module, rc, document, **results)
    if failed_objects:
        # Defensive: the agent exits 4 whenever an object fails; never report a mismatch as success.
        module.fail_json(msg='integrity failure: %s' % failed_objects[0], exit_code=rc, **results)
    module.exit_json(changed=False, **results)


if __name__ == '__main__':
    main()
