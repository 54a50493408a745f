# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # Options every module passes to the on-host pg-backup agent.
    DOCUMENTATION = r'''
options:
  agent_path:
    description:
      - Path of the C(pg-backup) agent executable on the managed host.
      - The C(miometry.pg_backup.agent) role installs it as C(bin/pg-backup) inside its virtualenv
        (O(agent_path) is the default when the role's defaults are kept) and sets the fact C(agent_bin) to that path.
      - A bare name is looked up on E(PATH).
    type: path
    default: /opt/pg-backup/bin/pg-backup
  config:
    description:
      - Path of the agent's configuration file for one PostgreSQL cluster on the managed host,
        for example C(/etc/pg-backup/main.yml) as written by the C(miometry.pg_backup.agent) role.
      - Passed to the agent as C(--config); E(PG_BACKUP_CONFIG) is not used.
    type: path
    required: true
requirements:
  - The C(pg-backup) agent on the managed host, speaking JSON schema version 1
    (installed by the C(miometry.pg_backup.agent) role).
notes:
  - The module runs the agent as the user Ansible runs as. Become the cluster's OS user
    (usually C(postgres)), or root, so the agent can read its configuration and key files.
  - The module contains no backup logic; it runs C(pg-backup --config CONFIG --json ...) without a shell
    and maps the agent's JSON document and exit code. It refuses a document whose C(schema_version)
    is not the one this collection understands.
seealso:
  - name: pg-backup command line and JSON contract
    description: The agent's commands, their JSON documents and exit codes.
    link: https://github.com/miometry/pg_backup/blob/main/README.md#using-the-agent
'''
