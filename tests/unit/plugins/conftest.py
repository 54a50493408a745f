# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Fixtures shared by the module and module_utils unit tests.

``fake_agent`` writes a tiny executable standing in for ``pg-backup``: it records its argv and prints
a canned JSON document with a chosen exit code. The real agent is exercised by Molecule and the
integration tests; here only the collection's side of the contract is under test.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import stat
import sys

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    patch_module_args = None

FAKE_AGENT = '''#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "argv.json"), "w") as f:
    json.dump(sys.argv[1:], f)
with open(os.path.join(here, "response.json")) as f:
    response = json.load(f)
sys.stdout.write(response["stdout"])
sys.stderr.write(response["stderr"])
sys.exit(response["rc"])
'''


class FakeAgent(object):
    def __init__(self, directory):
        self.directory = str(directory)
        self.path = os.path.join(self.directory, 'pg-backup')
        with open(self.path, 'w') as f:
            f.write(FAKE_AGENT.format(python=sys.executable))
        os.chmod(self.path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
        self.respond('list')

    def respond(self, command, rc=0, stderr='', schema_version=1, error=None, **fields):
        """Answer the next call with the agent's JSON envelope plus ``fields``."""
        document = dict(schema_version=schema_version, command=command, ok=rc == 0, exit_code=rc)
        document.update(fields)
        if error is not None:
            document['error'] = dict(dict(exit_code=rc, meaning='meaning of %d' % rc), **error)
        self.respond_raw(json.dumps(document), rc=rc, stderr=stderr)

    def respond_raw(self, stdout, rc=0, stderr=''):
        with open(os.path.join(self.directory, 'response.json'), 'w') as f:
            json.dump(dict(stdout=stdout, stderr=stderr, rc=rc), f)

    def argv(self):
        """The arguments of the last call, without the program name."""
        with open(os.path.join(self.directory, 'argv.json')) as f:
            return json.load(f)

    def called(self):
        return os.path.exists(os.path.join(self.directory, 'argv.json'))


class ModuleExit(Exception):
    def __init__(self, failed, result):
        super(ModuleExit, self).__init__(result.get('msg', ''))
        self.failed = failed
        self.result = result


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise ModuleExit(False, kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs.update(msg=msg, failed=True)
    raise ModuleExit(True, kwargs)


@pytest.fixture
def fake_agent(tmp_path):
    return FakeAgent(tmp_path)


@pytest.fixture
def run_module(monkeypatch):
    """Run a module's ``main()`` (or any callable building an AnsibleModule) with ``args``.

    Returns the ModuleExit with ``failed`` and ``result``; ``check_mode=True`` runs it in check mode.
    """
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)

    def run(main, args, check_mode=False):
        args = dict(args)
        if check_mode:
            args['_ansible_check_mode'] = True
        with module_args(monkeypatch, args):
            with pytest.raises(ModuleExit) as caught:
                main()
        return caught.value

    return run


class _LegacyArgs(object):
    def __init__(self, monkeypatch, args):
        monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps(dict(ANSIBLE_MODULE_ARGS=args))))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def module_args(monkeypatch, args):
    if patch_module_args is not None:
        return patch_module_args(args)
    return _LegacyArgs(monkeypatch, args)
