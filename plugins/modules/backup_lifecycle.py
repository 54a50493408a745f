#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_lifecycle
short_description: S3 lifecycle rules derived from the pg-backup retention policy
description:
  - Writes the lifecycle rules of the bucket that holds pg-backup repositories, derived from the retention the
    agent prunes by, and leaves every other rule of the bucket as it is. Bucket settings (creation, versioning,
    encryption, public access block, Object Lock) are M(amazon.aws.s3_bucket)'s job; the role
    C(miometry.pg_backup.bucket) runs both.
  - Each tier's expiration is the tier's retention upper bound (daily O(retention.daily_days), weekly
    O(retention.weekly_weeks) * 7, monthly O(retention.monthly_months) * 31 days) plus O(expiration_margin_days),
    so S3 never expires an object before the agent would.
  - Rules match objects by the C(tier) tag every object of the agent carries (and by O(prefix)) - this is why the
    collection keeps its own module, C(community.aws.s3_lifecycle) filters by prefix and object size only. Rule IDs
    start with C(pg-backup-); the module rewrites or removes those and keeps all others, in one
    C(PutBucketLifecycleConfiguration) (one rule per call would rewrite the configuration several times).
  - Contradictory settings fail before anything changes (a transition on or after the tier's expiration, a
    transition S3 refuses); transitions billed for a class's minimum storage duration (STANDARD_IA and ONEZONE_IA
    30 days, GLACIER_IR and GLACIER 90 days, DEEP_ARCHIVE 180 days) although the objects leave the class earlier,
    foreign rules that may expire the agent's objects early, and an Object Lock longer than a tier's expiration
    produce warnings.
version_added: 0.2.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Reads the rules and reports what would change, with the diff; changes nothing.
  diff_mode:
    support: full
    details: Before and after of the bucket's lifecycle rules.
options:
  name:
    description:
      - Name of the bucket. It must exist, except in check mode (a bucket the same play would create).
    type: str
    required: true
    aliases: [bucket]
  prefix:
    description:
      - The repositories' key prefix in the bucket (the agent's C(repository.prefix)); the rules only apply under
        C(<prefix>/). Empty for the whole bucket.
    type: str
    default: ''
  retention:
    description:
      - The retention the agent prunes by (its C(retention) settings). When clusters with different retentions
        share the bucket and prefix, give the longest of each tier.
    type: dict
    default: {}
    suboptions:
      daily_days:
        description: Days daily backups are kept.
        type: int
        default: 30
      weekly_weeks:
        description: Weeks weekly backups are kept.
        type: int
        default: 12
      monthly_months:
        description: Months monthly backups are kept (84 = 7 years).
        type: int
        default: 84
  expire:
    description:
      - Write an expiration rule per tier (C(pg-backup-<tier>-expiration)) as a backstop behind the agent's prune.
        V(false) writes no expiration rule; only the agent deletes backups.
      - The agent keeps the newest backup of each tier whatever its age; S3 does not know that, so a cluster whose
        backups stopped loses its last backups O(expiration_margin_days) after their retention ends.
    type: bool
    default: true
  expiration_margin_days:
    description:
      - Days added to each tier's retention upper bound to get its expiration.
    type: int
    default: 30
  transitions:
    description:
      - Storage class transitions per tier (rule C(pg-backup-<tier>-transition)), each item a day (counted from the
        object's creation) and a class, days increasing.
    type: dict
    suboptions:
      daily:
        description: Transitions of daily backups.
        type: list
        elements: dict
        suboptions: &transition_item
          days:
            description: Age in days at which objects move.
            type: int
            required: true
          storage_class:
            description: Class they move to.
            type: str
            required: true
            choices: [STANDARD_IA, INTELLIGENT_TIERING, ONEZONE_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE]
      weekly:
        description: Transitions of weekly backups.
        type: list
        elements: dict
        suboptions: *transition_item
      monthly:
        description: Transitions of monthly backups.
        type: list
        elements: dict
        suboptions: *transition_item
  abort_incomplete_multipart_days:
    description:
      - Abort multipart uploads left incomplete this many days (rule C(pg-backup-abort-incomplete-multipart));
        V(0) writes no such rule.
    type: int
    default: 7
  versioning:
    description:
      - Whether the bucket keeps versions; with V(true) the rule C(pg-backup-noncurrent-expiration) removes
        noncurrent versions and expired delete markers after O(noncurrent_version_expiration_days).
    type: bool
    default: false
  noncurrent_version_expiration_days:
    description:
      - With O(versioning), days a version is kept after it became noncurrent (the undo window after a delete or
        an overwrite). V(0) writes no such rule.
    type: int
    default: 30
  object_lock_days:
    description:
      - Days of the bucket's Object Lock default retention, if any; only used to warn when locked versions outlive
        a tier's expiration (they are billed until the lock ends).
    type: int
notes:
  - Lifecycle expiration counts from an object's creation, the agent from a backup's start; objects are created
    after the backup starts, so S3's clock never runs ahead of the agent's.
seealso:
  - module: amazon.aws.s3_bucket
    description: The bucket's other settings.
  - name: S3 lifecycle configuration
    description: Lifecycle rules, filters and transition constraints.
    link: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lifecycle-mgmt.html
'''

EXAMPLES = r'''
- name: Keep 14 dailies and 10 years of monthlies, monthlies in Deep Archive after 30 days
  miometry.pg_backup.backup_lifecycle:
    name: acme-pg-backups
    region: eu-central-1
    prefix: prod
    versioning: true
    retention:
      daily_days: 14
      weekly_weeks: 8
      monthly_months: 120
    transitions:
      monthly:
        - days: 30
          storage_class: DEEP_ARCHIVE
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
lifecycle_rules:
  description: Every lifecycle rule of the bucket after the change (in check mode, as it would be), foreign rules first.
  returned: always
  type: list
  elements: dict
  sample:
    - ID: pg-backup-daily-expiration
      Status: Enabled
      Filter:
        And:
          Prefix: prod/
          Tags:
            - Key: tier
              Value: daily
      Expiration:
        Days: 60
diff:
  description: The bucket's lifecycle rules before and after (also shown with C(--diff)).
  returned: always
  type: dict
  sample: {before: {lifecycle_rules: []}, after: {lifecycle_rules: []}}
'''

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ..module_utils import lifecycle

try:
    import botocore
except ImportError:  # pragma: no cover - AnsibleAWSModule reports the missing library
    pass

_TRANSITION_SPEC = dict(type='list', elements='dict', options=dict(
    days=dict(type='int', required=True),
    storage_class=dict(type='str', required=True, choices=list(lifecycle.TRANSITION_CLASSES)),
))


def current_rules(module, client, name):
    """The bucket's rules; [] without any, or for a bucket that does not exist yet (check mode only)."""
    try:
        return client.get_bucket_lifecycle_configuration(aws_retry=True, Bucket=name).get('Rules') or []
    except is_boto3_error_code('NoSuchLifecycleConfiguration'):
        return []
    except is_boto3_error_code('NoSuchBucket'):  # pylint: disable=duplicate-except
        if module.check_mode:
            return []
        module.fail_json(msg='bucket %s does not exist: create it first (amazon.aws.s3_bucket)' % name)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg='bucket %s: cannot read its lifecycle rules' % name)


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            name=dict(type='str', required=True, aliases=['bucket']),
            prefix=dict(type='str', default=''),
            retention=dict(type='dict', default={}, options=dict(
                daily_days=dict(type='int', default=30),
                weekly_weeks=dict(type='int', default=12),
                monthly_months=dict(type='int', default=84),
            )),
            expire=dict(type='bool', default=True),
            expiration_margin_days=dict(type='int', default=30),
            transitions=dict(type='dict', options=dict(
                daily=_TRANSITION_SPEC, weekly=_TRANSITION_SPEC, monthly=_TRANSITION_SPEC)),
            abort_incomplete_multipart_days=dict(type='int', default=7),
            versioning=dict(type='bool', default=False),
            noncurrent_version_expiration_days=dict(type='int', default=30),
            object_lock_days=dict(type='int'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    name = p['name']
    try:
        ours, warnings = lifecycle.derive(
            retention=p['retention'], margin_days=p['expiration_margin_days'], expire=p['expire'],
            transitions=p['transitions'], abort_incomplete_multipart_days=p['abort_incomplete_multipart_days'],
            noncurrent_version_expiration_days=p['noncurrent_version_expiration_days'],
            versioning=p['versioning'], prefix=p['prefix'])
    except lifecycle.LifecycleError as exc:
        module.fail_json(msg='contradictory lifecycle settings: %s' % exc, problems=exc.problems, bucket=name)

    client = module.client('s3', retry_decorator=AWSRetry.jittered_backoff())
    before = current_rules(module, client, name)
    warnings.extend(lifecycle.foreign_rule_warnings(before, p['prefix'], p['expiration_margin_days'], p['retention']))
    if p['object_lock_days']:
        warnings.extend(lifecycle.object_lock_warnings({'days': p['object_lock_days']}, p['retention'],
                                                       p['expiration_margin_days'], p['expire']))
    for warning in warnings:
        module.warn(warning)

    changed = not lifecycle.same_rules(before, ours)
    after = lifecycle.merge(before, ours) if changed else before
    if changed and not module.check_mode:
        try:
            if after:
                client.put_bucket_lifecycle_configuration(aws_retry=True, Bucket=name,
                                                          LifecycleConfiguration={'Rules': after})
            else:
                client.delete_bucket_lifecycle(aws_retry=True, Bucket=name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            module.fail_json_aws(e, msg='bucket %s: cannot write its lifecycle rules' % name)
    module.exit_json(changed=changed, lifecycle_rules=lifecycle.jsonable(after),
                     diff=dict(before={'lifecycle_rules': lifecycle.jsonable(before)},
                               after={'lifecycle_rules': lifecycle.jsonable(after)}))


if __name__ == '__main__':
    main()
