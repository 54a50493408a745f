#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: agent_run
short_description: Run one command of the pg-backup agent and return its JSON document
description:
  - Runs C(pg-backup --config CONFIG --json COMMAND ARGS...) on the managed host, without a shell, and returns
    the agent's JSON document as RV(result), with its exit code RV(rc), RV(ok) and RV(error).
  - The one way the collection's playbooks and the C(miometry.pg_backup.wal_archiving) role run the agent.
    M(miometry.pg_backup.backup_info), M(miometry.pg_backup.backup_checksum) and M(miometry.pg_backup.backup_health)
    use the same client and add summaries of their own.
  - Reports C(changed) as it is. V(list), V(show), V(verify) (also C(--restore), which restores into a scratch
    database or server and removes it), V(health), V(wal-check), V(config validate) and V(compliance report) without
    C(--output) never report a change (with C(--output) it changed, as it wrote a file);
    their audit records and verification verdicts do not count. V(backup) changed when it stored a backup, not
    when it skipped a standby (C(--skip-if-standby)); V(restore) and V(pitr) when they succeeded; V(drill) when
    the drill ran (it marks the primary, recovers a scratch copy and stores its report, also when the drill
    fails); V(prune) when it deleted or cleaned up anything, never with C(--dry-run).
  - Fails, with the agent's own message, when the agent's exit code is not in O(expected_rc), unless
    O(fail_on_error=false). Problems with the agent itself always fail (see the notes).
version_added: 0.2.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.agent
  - miometry.pg_backup.attributes
attributes:
  check_mode:
    support: partial
    details:
      - V(list), V(show), V(verify), V(health), V(wal-check), V(erasure list) and V(config validate) run and return
        the same result.
      - V(prune) runs as C(prune --dry-run) (it takes the cluster's lock like a prune) and reports as changed
        what it would delete.
      - V(backup), V(restore), V(pitr), V(drill), V(drill-chart) (it writes a file) and V(erasure add) do not run;
        the task is reported as skipped, with a message.
      - V(compliance report) runs and returns the report in RV(result) (C(report)); with C(--output) (it writes a
        file on the host) it does not run and is reported as skipped.
  diff_mode:
    support: none
    details: What the agent did is in RV(result); there is no before and after.
options:
  command:
    description:
      - The agent's command. V(config validate) checks the configuration file O(config).
      - The agent's C(wal-push) and C(wal-fetch) belong to PostgreSQL (C(archive_command), C(restore_command))
        and are not offered.
    type: str
    required: true
    choices: [backup, compliance report, config validate, drill, drill-chart, erasure add, erasure list, health, list,
              pitr, prune, restore, show, verify, wal-check]
  args:
    description:
      - Arguments after the command, one item per argument; nothing is split or interpreted by a shell.
        For example V([--tier, daily, --skip-if-standby]) for V(backup).
      - The agent takes no secret on its command line (passphrases and keys are read from the files its
        configuration names). V(erasure add) takes statements that name data subjects (C(--sql), C(--reason)), and
        V(erasure list) returns them, so set C(no_log) on those tasks (as C(playbooks/erasure.yml) does).
      - V(health) answers in JSON here; C(--format) with another value is refused (the schedule and monitoring
        roles run the Nagios and Prometheus formats).
    type: list
    elements: str
    default: []
  expected_rc:
    description:
      - Exit codes of the agent that do not fail the task. The agent's exit codes are listed by
        C(pg-backup exit-codes) (4 is an integrity failure, also a failed drill or restore verification).
    type: list
    elements: int
    default: [0]
  fail_on_error:
    description:
      - V(false) never fails the task because of the agent's exit code, whatever O(expected_rc) says; the caller
        reads RV(rc), RV(ok) and RV(error), for example to collect every host's drill into one table.
    type: bool
    default: true
seealso:
  - module: miometry.pg_backup.backup_info
    description: List backups with a summary per tier.
  - module: miometry.pg_backup.backup_checksum
    description: Verify stored backups and name every failed object.
  - module: miometry.pg_backup.backup_health
    description: Health with a failure threshold.
'''

EXAMPLES = r'''
- name: Take a daily backup of the main cluster; a standby reports skipped, not changed
  miometry.pg_backup.agent_run:
    agent_path: "{{ agent_bin }}"
    config: "{{ agent_config_files['main'] }}"
    command: backup
    args: [--tier, daily, --skip-if-standby]
  become: true
  become_user: postgres
  register: main_backup

- name: Show the new backup's id
  ansible.builtin.debug:
    msg: "{{ main_backup.result.backup_id | default('skipped: ' ~ main_backup.result.reason | default('')) }}"

- name: Run a DR drill and keep its result even when a target is missed
  miometry.pg_backup.agent_run:
    config: /etc/pg-backup/main.yml
    command: drill
    args: [--port, "55434"]
    fail_on_error: false
  become: true
  become_user: postgres
  register: drill

- name: Report the drill
  ansible.builtin.debug:
    msg: "RTO {{ drill.result.rto.seconds | default('-') }} s, passed: {{ drill.rc == 0 }}, {{ drill.error.message | default('') }}"

- name: What would prune delete? (in check mode this runs as prune --dry-run anyway)
  miometry.pg_backup.agent_run:
    config: /etc/pg-backup/main.yml
    command: prune
    args: [--dry-run]
  become: true
  become_user: postgres
  register: prune_plan

- name: Check the configuration file of a cluster
  miometry.pg_backup.agent_run:
    config: /etc/pg-backup/main.yml
    command: config validate
'''

RETURN = r'''
result:
  description:
    - The agent's JSON document - the envelope (C(schema_version), C(command), C(ok), C(exit_code) and, when the
      command failed, C(error)) plus the command's own fields, as the agent's README documents them.
  returned: when the agent ran
  type: dict
  sample:
    schema_version: 1
    command: backup
    ok: true
    exit_code: 0
    backup_id: 20261125T020000Z-logical-daily
    bytes: 2418794
    backup: {backup_id: 20261125T020000Z-logical-daily, kind: logical, tier: daily}
rc:
  description: The agent's exit code.
  returned: when the agent ran
  type: int
  sample: 0
ok:
  description: The agent's own verdict (C(ok) of its document; true only for exit code 0).
  returned: when the agent ran
  type: bool
  sample: true
error:
  description: The agent's error when its exit code is not 0, else null.
  returned: when the agent ran
  type: dict
  contains:
    exit_code:
      description: The exit code.
      type: int
      sample: 5
    type:
      description: The agent's error class.
      type: str
      sample: StorageError
    message:
      description: What went wrong, in the agent's words.
      type: str
      sample: "storage unreachable: timeout; check the endpoint"
    meaning:
      description: The meaning of the exit code.
      type: str
      sample: storage error
    problems:
      description: Every problem of an invalid configuration.
      type: list
      elements: str
      returned: for a configuration error
      sample: ["postgres.port: expected an integer"]
stderr:
  description: What the agent wrote to its standard error (one line per stage, warnings).
  returned: when the agent ran
  type: str
  sample: "pg-backup: dumping app\n"
agent_command:
  description: The agent command line the module ran.
  returned: when the agent ran
  type: list
  elements: str
  sample: [/opt/pg-backup/bin/pg-backup, --config, /etc/pg-backup/main.yml, --json, backup, --tier, daily]
msg:
  description: Why the command did not run (check mode), or the agent's error message when the task failed.
  returned: when skipped or failed
  type: str
  sample: "check mode: pg-backup backup was not run (it changes the repository or a server)"
'''

from ansible.module_utils.basic import AnsibleModule

from ..module_utils.agent_client import EXIT_OK, agent_argument_spec, agent_error_message, call_agent

COMMANDS = ('backup', 'compliance report', 'config validate', 'drill', 'drill-chart', 'erasure add', 'erasure list',
            'health', 'list', 'pitr', 'prune', 'restore', 'show', 'verify', 'wal-check')
READ_ONLY = ('config validate', 'erasure list', 'health', 'list', 'show', 'verify', 'wal-check')
# Commands whose effect cannot be predicted without doing it: skipped in check mode.
NOT_IN_CHECK_MODE = ('backup', 'drill', 'drill-chart', 'erasure add', 'pitr', 'restore')


def did_change(command, rc, document, check_mode):
    """Whether the call changed the repository or a server (the module's description says the same)."""
    if command == 'drill':
        # Once it has an id the drill has marked the primary and writes its report, passed or not.
        return 'drill_id' in document
    if command == 'compliance report':
        return rc == EXIT_OK and bool(document.get('output'))
    if rc != EXIT_OK or command in READ_ONLY:
        return False
    if command == 'backup':
        return not document.get('skipped')
    if command == 'prune':
        if document.get('dry_run') and not check_mode:
            return False
        removed = [document.get(k) for k in ('deleted', 'incomplete_removed', 'uploads_aborted')]
        return any(removed) or bool((document.get('wal') or {}).get('deleted'))
    return True


def writes_file(command, args):
    """``compliance report --output FILE`` writes a file on the host (changed; not run in check mode)."""
    return command == 'compliance report' and any(a in ('--output', '-o') or a.startswith('--output=') for a in args)


def health_format(args):
    """The ``--format`` value among the arguments, or None."""
    for index, arg in enumerate(args):
        if arg.startswith('--format='):
            return arg.split('=', 1)[1]
        if arg == '--format' and index + 1 < len(args):
            return args[index + 1]
    return None


def main():
    argument_spec = agent_argument_spec()
    argument_spec.update(
        command=dict(type='str', required=True, choices=list(COMMANDS)),
        args=dict(type='list', elements='str', default=[]),
        expected_rc=dict(type='list', elements='int', default=[EXIT_OK]),
        fail_on_error=dict(type='bool', default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    command, args = module.params['command'], list(module.params['args'])

    if command == 'health' and health_format(args) not in (None, 'json'):
        module.fail_json(msg='agent_run reads the JSON document of health; --format %s prints none (the schedule and '
                             'monitoring roles run that format)' % health_format(args))
    if module.check_mode and (command in NOT_IN_CHECK_MODE or writes_file(command, args)):
        module.exit_json(changed=False, skipped=True,
                         msg='check mode: pg-backup %s was not run (it changes the repository or a server)' % command)
    if module.check_mode and command == 'prune' and '--dry-run' not in args:
        args.append('--dry-run')

    call = call_agent(module, command.split() + args)
    document = call.document
    results = dict(
        changed=did_change(command, call.rc, document, module.check_mode),
        result=document,
        rc=call.rc,
        ok=document.get('ok', call.rc == EXIT_OK),
        error=document.get('error'),
        stderr=call.stderr,
        agent_command=call.command,
    )
    if call.rc not in module.params['expected_rc'] and module.params['fail_on_error']:
        module.fail_json(msg=agent_error_message(call.rc, document), **results)
    # Explicit: Ansible marks a result with a non-zero rc and no 'failed' key as failed.
    module.exit_json(failed=False, **results)


if __name__ == '__main__':
    main()
