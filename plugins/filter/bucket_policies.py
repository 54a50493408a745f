# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
name: bucket_policies
short_description: IAM policy documents of the pg-backup bucket's duties, per cluster
version_added: 0.2.0
author:
  - miometry platform engineering (@miometry)
description:
  - Makes the IAM policy documents the role C(miometry.pg_backup.bucket) writes - one C(writer) and one
    C(pruner) document per cluster (each limited to C(<prefix>/<cluster>/)) and one C(restorer) document for
    every cluster given.
  - Writers and pruners create objects only with C(If-None-Match=*) (C(s3:if-none-match)); C(CreateMultipartUpload)
    and C(UploadPart) are exempted through C(s3:ObjectCreationOperation), C(CompleteMultipartUpload) must carry
    the header. Nothing can be overwritten, and no host writes outside its cluster.
  - The restorer reads (C(GetObject), C(GetObjectVersion), C(ListBucket), C(ListBucketVersions),
    C(RestoreObject)) and creates audit records; every document denies deletes of object versions, Object Lock
    bypass and bucket policy, lifecycle and versioning changes.
options:
  _input:
    description: The bucket name.
    type: str
    required: true
  prefix:
    description: The agent's C(repository.prefix); empty for the whole bucket.
    type: str
    default: ""
  clusters:
    description:
      - Cluster names, or items of the agent role's C(agent_clusters) (their C(name); an item whose
        C(config.repository.s3.bucket) names another bucket is left out). At least one is required.
    type: list
    elements: raw
    required: true
  duties:
    description: Which documents to make.
    type: list
    elements: str
    default: [writer, pruner, restorer]
    choices: [writer, pruner, restorer]
  partition:
    description: ARN partition.
    type: str
    default: aws
    choices: [aws, aws-cn, aws-us-gov]
'''

EXAMPLES = r'''
- name: Write one file per document
  ansible.builtin.copy:
    content: "{{ item.document | to_nice_json(indent=2) }}\n"
    dest: "/srv/iam/backups-{{ item.name }}.json"
    mode: "0644"
  loop: "{{ 'backups' | miometry.pg_backup.bucket_policies(prefix='pg', clusters=['main', 'billing']) }}"
  loop_control:
    label: "{{ item.name }}"
'''

RETURN = r'''
_value:
  description:
    - One item per document - C(name) (C(writer-<cluster>), C(pruner-<cluster>) or C(restorer)), C(duty),
      C(cluster) (null for the restorer) and C(document) (the policy, a mapping).
  type: list
  elements: dict
'''

from ansible.errors import AnsibleFilterError

from ansible_collections.miometry.pg_backup.plugins.module_utils.bucket_policy import (
    DUTIES, PolicyError, documents)


def bucket_policies(bucket, prefix='', clusters=None, duties=DUTIES, partition='aws'):
    try:
        return documents(bucket, prefix, clusters, duties, partition)
    except PolicyError as exc:
        raise AnsibleFilterError('bucket_policies: %s' % exc)


class FilterModule(object):
    def filters(self):
        return {'bucket_policies': bucket_policies}
