# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one client every module of this collection uses to talk to the on-host ``pg-backup`` agent.

The agent owns all backup logic; modules only build its command line and map its ``--json``
envelope (``schema_version``, ``command``, ``ok``, ``exit_code`` and, on failure, ``error``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
from collections import namedtuple

DEFAULT_AGENT_PATH = '/opt/pg-backup/bin/pg-backup'
SUPPORTED_SCHEMA_VERSION = 1
INSTALL_HINT = 'install it with the miometry.pg_backup.agent role, or point agent_path at the pg-backup executable'

# The agent's documented exit codes that modules treat specially.
EXIT_OK = 0
EXIT_INTEGRITY = 4


def agent_argument_spec():
    """Options shared by every module (documented by the miometry.pg_backup.agent doc fragment)."""
    return dict(
        agent_path=dict(type='path', default=DEFAULT_AGENT_PATH),
        config=dict(type='path', required=True),
    )


def agent_command(module, args):
    """The argv of one agent call: never run through a shell."""
    return [_resolve_agent(module), '--config', module.params['config'], '--json'] + [str(a) for a in args]


# One finished agent call: exit code, JSON envelope (a dict), stderr text and the argv that ran.
AgentCall = namedtuple('AgentCall', ['rc', 'document', 'stderr', 'command'])


def call_agent(module, args):
    """Run ``pg-backup --config CONFIG --json ARGS...`` once and return an ``AgentCall``.

    Problems with the agent itself (missing, no JSON, unsupported schema) always fail the module;
    the agent's exit code is left to the caller.
    """
    cmd = agent_command(module, args)
    rc, stdout, stderr = module.run_command(cmd, check_rc=False)
    return AgentCall(rc, _parse_envelope(module, cmd, rc, stdout, stderr), stderr, cmd)


def run_agent(module, args, fail_on_error=True):
    """Run the agent like ``call_agent`` and return ``(exit_code, document)``.

    A non-zero exit code of the agent fails the module with the agent's own message only when
    ``fail_on_error`` is true; otherwise the caller decides what the exit code means.
    """
    call = call_agent(module, args)
    if call.rc != EXIT_OK and fail_on_error:
        fail_with_agent_error(module, call.rc, call.document, cmd=call.command, stderr=call.stderr)
    return call.rc, call.document


def agent_error_message(exit_code, document):
    """The agent's own message for a failed call, or one naming the command and exit code."""
    error = document.get('error') or {}
    return error.get('message') or 'pg-backup %s failed with exit code %d' % (document.get('command', ''), exit_code)


def fail_with_agent_error(module, exit_code, document, msg=None, **extra):
    """Fail the module with the agent's error message, exit code and error type."""
    error = document.get('error') or {}
    result = dict(
        msg=agent_error_message(exit_code, document) if msg is None else msg,
        exit_code=exit_code,
        error_type=error.get('type'),
        error_meaning=error.get('meaning'),
    )
    if error.get('problems'):
        result['problems'] = error['problems']
    result.update(extra)
    module.fail_json(**result)


def _resolve_agent(module):
    path = module.params['agent_path']
    if os.path.sep not in path:
        found = module.get_bin_path(path)
        if found is None:
            module.fail_json(msg='the pg-backup agent %r was not found on PATH; %s' % (path, INSTALL_HINT))
        return found
    if not os.path.exists(path):
        module.fail_json(msg='the pg-backup agent is not installed at %s; %s' % (path, INSTALL_HINT))
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        module.fail_json(msg='%s is not an executable file; %s' % (path, INSTALL_HINT))
    return path


def _parse_envelope(module, cmd, rc, stdout, stderr):
    try:
        document = json.loads(stdout)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        module.fail_json(
            msg='%s printed no JSON document (exit code %d); stderr: %s'
                % (cmd[0], rc, stderr.strip() or '(empty)'),
            exit_code=rc, stdout=stdout, stderr=stderr, agent_command=cmd)
    version = document.get('schema_version')
    if version != SUPPORTED_SCHEMA_VERSION:
        if isinstance(version, int) and version > SUPPORTED_SCHEMA_VERSION:
            why = ('the agent is newer than this collection: upgrade the miometry.pg_backup collection '
                   'or install the agent version it ships')
        else:
            why = 'the agent is older than this collection: upgrade it with the miometry.pg_backup.agent role'
        module.fail_json(
            msg='%s answered with JSON schema_version %r but this collection understands %d; %s'
                % (cmd[0], version, SUPPORTED_SCHEMA_VERSION, why),
            exit_code=rc, agent_command=cmd)
    return document
