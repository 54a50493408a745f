#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_bucket
short_description: Configure the S3 bucket that holds pg-backup repositories
description:
  - Manages the settings of one S3 or S3-compatible bucket (MinIO, Ceph RGW, ...) that the pg-backup agent
    stores backups in - versioning, default encryption, the public access block, lifecycle rules and the
    Object Lock default retention - in one idempotent task with full check mode and diff.
  - Runs on the control node with boto3 (C(delegate_to=localhost), once per bucket, never once per
    database host).
  - Lifecycle rules are derived from the same retention settings the agent prunes by. Each tier's
    expiration is the tier's retention upper bound (daily O(retention.daily_days), weekly
    O(retention.weekly_weeks) * 7, monthly O(retention.monthly_months) * 31 days) plus
    O(expiration_margin_days), so S3 never expires an object before the agent would.
  - Rules match objects by the C(tier) tag every object of the agent carries (and by O(prefix)). Their
    IDs start with C(pg-backup-); every other rule of the bucket is preserved untouched.
  - Contradictory settings fail before anything changes (a transition on or after the tier's expiration,
    a transition S3 refuses); transitions that are billed for a class's minimum storage duration
    (STANDARD_IA and ONEZONE_IA 30 days, GLACIER_IR and GLACIER 90 days, DEEP_ARCHIVE 180 days) although
    the object leaves the class earlier produce warnings.
  - Fails when the bucket is in another region than O(region) (data locality).
version_added: 0.1.0
author:
  - miometry platform engineering (@miometry)
extends_documentation_fragment:
  - miometry.pg_backup.attributes
attributes:
  check_mode:
    support: full
    details: Reads the bucket and reports what would change, with the diff; changes nothing.
  diff_mode:
    support: full
    details: Before and after of versioning, default encryption, public access block, lifecycle rules
      and Object Lock.
requirements:
  - boto3 (on the control node)
options:
  name:
    description:
      - Name of the bucket.
    type: str
    required: true
    aliases: [bucket]
  state:
    description:
      - V(present) is the only state; the module never deletes a bucket.
    type: str
    choices: [present]
    default: present
  region:
    description:
      - Region the bucket must be in; a new bucket is created there.
      - With O(check_region) the module fails when the bucket's real region differs.
      - For S3-compatible stores, the region the store is configured with (often V(us-east-1)).
    type: str
    required: true
    aliases: [aws_region]
  check_region:
    description:
      - Fail when the bucket's region (C(GetBucketLocation)) is not O(region).
      - Switch off only for stores that answer C(GetBucketLocation) with something meaningless.
    type: bool
    default: true
  endpoint_url:
    description:
      - Endpoint of an S3-compatible store, for example V(https://minio.internal:9000). Unset for AWS.
      - With an endpoint, request checksums are only sent where the operation requires one (boto3 1.36 and
        later send them by default, which MinIO and Ceph versions before 2025 refuse).
    type: str
    aliases: [aws_endpoint_url]
  force_path_style:
    description:
      - Use path-style addressing (C(https://host/bucket/key)); MinIO and most non-AWS stores need it.
    type: bool
    default: false
  validate_certs:
    description:
      - Verify the endpoint's TLS certificate.
    type: bool
    default: true
  ca_bundle:
    description:
      - CA bundle file to verify the endpoint's certificate with.
    type: path
  access_key:
    description:
      - Access key id. Without O(access_key) and O(profile), boto3's default chain applies
        (E(AWS_ACCESS_KEY_ID), shared credentials file, instance role, ...).
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - Secret access key, with O(access_key).
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - Session token of temporary credentials.
    type: str
  profile:
    description:
      - Profile of the shared credentials and config files.
    type: str
    aliases: [aws_profile]
  create:
    description:
      - Create the bucket in O(region) when it does not exist. Otherwise a missing bucket fails.
    type: bool
    default: true
  versioning:
    description:
      - V(true) enables versioning, V(false) suspends it (when it was ever enabled). Unset leaves it as it is.
      - With versioning, a compromised or buggy writer that overwrites or re-tags an object cannot destroy
        the previous version, and the pruner's deletes only add delete markers (see
        O(noncurrent_version_expiration_days)).
    type: bool
  encryption:
    description:
      - Default server-side encryption of the bucket, in addition to the agent's client-side encryption.
      - V(none) removes the default encryption configuration; AWS encrypts every new object with SSE-S3
        anyway, so V(none) is refused without O(endpoint_url) (use V(AES256) on AWS).
      - Unset leaves it as it is.
    type: str
    choices: [none, AES256, aws:kms]
  kms_key_id:
    description:
      - KMS key (ARN recommended, as S3 compares it literally) when O(encryption=aws:kms).
      - S3 Bucket Keys are enabled with it, which cuts KMS requests.
    type: str
  public_access_block:
    description:
      - V(true) sets all four flags of the bucket's public access block (block and ignore public ACLs,
        block public policies, restrict public buckets); V(false) removes the block. Unset leaves it as it is.
    type: bool
  prefix:
    description:
      - The repositories' key prefix in the bucket (the agent's C(repository.prefix)); lifecycle rules only
        apply under C(<prefix>/). Empty for the whole bucket.
    type: str
    default: ''
  lifecycle:
    description:
      - Manage the collection's lifecycle rules. V(false) leaves every lifecycle rule of the bucket as it is
        (for stores without lifecycle support).
    type: bool
    default: true
  retention:
    description:
      - The retention the agent prunes by (its C(retention) settings). When clusters with different
        retentions share the bucket and prefix, give the longest of each tier.
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
      - Write an expiration rule per tier (C(pg-backup-<tier>-expiration)) as a backstop behind the agent's
        prune. V(false) writes no expiration rule at all; only the agent deletes backups.
      - The agent keeps the newest backup of each tier whatever its age; S3 does not know that, so a cluster
        whose backups stopped loses its last backups O(expiration_margin_days) after their retention ends.
        The agent's health check reports the missed schedule long before.
    type: bool
    default: true
  expiration_margin_days:
    description:
      - Days added to each tier's retention upper bound to get its expiration.
    type: int
    default: 30
  transitions:
    description:
      - Storage class transitions per tier (rule C(pg-backup-<tier>-transition)), each item a day (counted from
        the object's creation) and a class, days increasing.
      - A transition on or after the tier's expiration fails. A transition whose objects leave the class (next
        transition, the agent's prune, expiration) before the class's minimum storage duration produces a warning.
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
        V(0) writes no such rule. The agent's prune removes them too, after its grace period.
    type: int
    default: 7
  noncurrent_version_expiration_days:
    description:
      - With versioning, remove noncurrent versions this many days after they became noncurrent, and expired
        delete markers (rule C(pg-backup-noncurrent-expiration)). This is the undo window after a delete or an
        overwrite. V(0) writes no such rule. Ignored without versioning.
    type: int
    default: 30
  object_lock:
    description:
      - Object Lock default retention for new objects. Object Lock can only be enabled when the bucket is
        created (it also enables versioning); for an existing bucket without it the module fails.
      - Unset leaves an existing configuration as it is.
    type: dict
    suboptions:
      mode:
        description:
          - V(GOVERNANCE) can be lifted by principals with C(s3:BypassGovernanceRetention);
            V(COMPLIANCE) by nobody, not even the account root, until the retention ends.
        type: str
        required: true
        choices: [GOVERNANCE, COMPLIANCE]
      days:
        description: Days each new object version is locked.
        type: int
        required: true
notes:
  - Rule IDs C(pg-backup-daily-expiration), C(pg-backup-weekly-expiration), C(pg-backup-monthly-expiration),
    C(pg-backup-<tier>-transition), C(pg-backup-abort-incomplete-multipart) and C(pg-backup-noncurrent-expiration)
    are owned by this module; it rewrites or removes them. Other rules are kept, and the module warns when
    one of them may expire the agent's objects earlier.
  - Lifecycle expiration counts from an object's creation, the agent from a backup's start; objects are created
    after the backup starts, so S3's clock never runs ahead of the agent's.
  - For a bucket that does not exist yet, check mode reports the bucket's creation and the settings it would
    get.
seealso:
  - module: miometry.pg_backup.backup_health
    description: Checks that storage is reachable and in the configured region, among others.
  - module: miometry.pg_backup.backup_info
    description: Lists the backups the bucket holds.
  - name: S3 lifecycle configuration
    description: Lifecycle rules, filters and transition constraints.
    link: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lifecycle-mgmt.html
  - name: S3 Object Lock
    description: Retention modes and default retention.
    link: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html
'''

EXAMPLES = r'''
- name: Configure the backup bucket with the agent's default retention
  miometry.pg_backup.backup_bucket:
    name: acme-pg-backups
    region: eu-central-1
    versioning: true
    encryption: AES256
    public_access_block: true
    prefix: prod
  delegate_to: localhost
  run_once: true

- name: Keep 14 dailies and 10 years of monthlies, monthlies in Deep Archive after 30 days
  miometry.pg_backup.backup_bucket:
    name: acme-pg-backups
    region: eu-central-1
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

- name: A new bucket with Object Lock (GOVERNANCE, 30 days) and KMS encryption
  miometry.pg_backup.backup_bucket:
    name: acme-pg-backups-locked
    region: eu-central-1
    versioning: true
    encryption: aws:kms
    kms_key_id: arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
    object_lock:
      mode: GOVERNANCE
      days: 30
  delegate_to: localhost
  run_once: true

- name: A MinIO bucket, backups deleted only by the agent
  miometry.pg_backup.backup_bucket:
    name: pg-backups
    region: us-east-1
    endpoint_url: https://minio.internal:9000
    force_path_style: true
    ca_bundle: /etc/ssl/certs/internal-ca.pem
    access_key: "{{ minio_access_key }}"
    secret_key: "{{ minio_secret_key }}"
    expire: false
  delegate_to: localhost
  run_once: true
  register: bucket

- name: Show the lifecycle rules the bucket has now
  ansible.builtin.debug:
    var: bucket.lifecycle_rules
'''

RETURN = r'''
bucket:
  description: Name of the bucket.
  returned: always
  type: str
  sample: acme-pg-backups
region:
  description: Region of the bucket (the region it is created in, when it is new).
  returned: always
  type: str
  sample: eu-central-1
created:
  description: Whether the bucket was (or, in check mode, would be) created.
  returned: always
  type: bool
  sample: false
lifecycle_rules:
  description:
    - Every lifecycle rule of the bucket after the change (in check mode, as it would be), foreign rules first.
    - The bucket's rules as they are when O(lifecycle=false).
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
actions:
  description: The S3 API calls that changed the bucket (in check mode, would have), in order.
  returned: always
  type: list
  elements: str
  sample: [put_bucket_versioning Enabled, put_bucket_lifecycle_configuration]
diff:
  description: Before and after of the bucket's settings (also shown with C(--diff)).
  returned: always
  type: dict
  contains:
    before:
      description: Settings before the change; C(exists=false) and nothing else for a new bucket.
      type: dict
      sample: {exists: true, versioning: Disabled}
    after:
      description:
        - Settings after the change, with keys C(exists), C(region), C(versioning) (V(Enabled), V(Suspended)
          or V(Disabled)), C(encryption) (C(algorithm), C(kms_key_id)), C(public_access_block) (the four
          flags), C(lifecycle_rules) and C(object_lock) (C(enabled), C(mode), C(days)).
      type: dict
      sample: {exists: true, versioning: Enabled}
warnings:
  description: Costs and risks worth knowing (minimum storage durations, foreign rules, Object Lock).
  returned: when there are any
  type: list
  elements: str
  sample:
    - >-
      transitions.daily: objects moved to GLACIER on day 10 are pruned by the agent (daily retention upper bound)
      on day 30, after 20 days; GLACIER is billed for at least 90 days
'''

import copy
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ..module_utils import lifecycle

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the control node
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()

PUBLIC_ACCESS_FLAGS = ('BlockPublicAcls', 'IgnorePublicAcls', 'BlockPublicPolicy', 'RestrictPublicBuckets')
_TRANSITION_SPEC = dict(type='list', elements='dict', options=dict(
    days=dict(type='int', required=True),
    storage_class=dict(type='str', required=True, choices=list(lifecycle.TRANSITION_CLASSES)),
))


def argument_spec():
    return dict(
        name=dict(type='str', required=True, aliases=['bucket']),
        state=dict(type='str', default='present', choices=['present']),
        region=dict(type='str', required=True, aliases=['aws_region']),
        check_region=dict(type='bool', default=True),
        endpoint_url=dict(type='str', aliases=['aws_endpoint_url']),
        force_path_style=dict(type='bool', default=False),
        validate_certs=dict(type='bool', default=True),
        ca_bundle=dict(type='path'),
        access_key=dict(type='str', no_log=True, aliases=['aws_access_key_id']),
        secret_key=dict(type='str', no_log=True, aliases=['aws_secret_access_key']),
        session_token=dict(type='str', no_log=True),
        profile=dict(type='str', aliases=['aws_profile']),
        create=dict(type='bool', default=True),
        versioning=dict(type='bool'),
        encryption=dict(type='str', choices=['none', 'AES256', 'aws:kms']),
        kms_key_id=dict(type='str'),
        public_access_block=dict(type='bool'),
        prefix=dict(type='str', default=''),
        lifecycle=dict(type='bool', default=True),
        retention=dict(type='dict', default={}, options=dict(
            daily_days=dict(type='int', default=lifecycle.DEFAULT_RETENTION['daily_days']),
            weekly_weeks=dict(type='int', default=lifecycle.DEFAULT_RETENTION['weekly_weeks']),
            monthly_months=dict(type='int', default=lifecycle.DEFAULT_RETENTION['monthly_months']),
        )),
        expire=dict(type='bool', default=True),
        expiration_margin_days=dict(type='int', default=30),
        transitions=dict(type='dict', options=dict(
            daily=copy.deepcopy(_TRANSITION_SPEC),
            weekly=copy.deepcopy(_TRANSITION_SPEC),
            monthly=copy.deepcopy(_TRANSITION_SPEC),
        )),
        abort_incomplete_multipart_days=dict(type='int', default=7),
        noncurrent_version_expiration_days=dict(type='int', default=30),
        object_lock=dict(type='dict', options=dict(
            mode=dict(type='str', required=True, choices=list(lifecycle.OBJECT_LOCK_MODES)),
            days=dict(type='int', required=True),
        )),
    )


class BucketError(Exception):
    pass


def _error_code(exc):
    return (getattr(exc, 'response', None) or {}).get('Error', {}).get('Code', '')


def _status(exc):
    return (getattr(exc, 'response', None) or {}).get('ResponseMetadata', {}).get('HTTPStatusCode')


def normalize_region(location):
    # AWS answers None for us-east-1; "EU" is the legacy name of eu-west-1 (as the agent's health check).
    return {None: 'us-east-1', '': 'us-east-1', 'EU': 'eu-west-1'}.get(location, location)


class Bucket(object):
    """One bucket's settings, read and written through boto3."""

    def __init__(self, module, client, name):
        self.module = module
        self.client = client
        self.name = name

    def call(self, what, method, *args, **kwargs):
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            self.module.fail_json(msg='bucket %s: %s failed: %s' % (self.name, what, exc),
                                  error_code=_error_code(exc) or None, bucket=self.name)

    def _read(self, what, method, missing_codes):
        """Answer of a get_* call, or None when the store says the configuration does not exist."""
        try:
            return getattr(self.client, method)(Bucket=self.name)
        except ClientError as exc:
            if _error_code(exc) in missing_codes:
                return None
            self.module.fail_json(msg='bucket %s: reading %s failed: %s' % (self.name, what, exc),
                                  error_code=_error_code(exc) or None, bucket=self.name)
        except BotoCoreError as exc:
            self.module.fail_json(msg='bucket %s: reading %s failed: %s' % (self.name, what, exc), bucket=self.name)

    def exists(self):
        """(exists, region header) from HeadBucket; 403 means it exists but belongs to someone else."""
        try:
            response = self.client.head_bucket(Bucket=self.name)
        except ClientError as exc:
            if _error_code(exc) in ('404', 'NoSuchBucket', 'NotFound') or _status(exc) == 404:
                return False, None
            if _error_code(exc) in ('403', 'AccessDenied', 'Forbidden') or _status(exc) == 403:
                self.module.fail_json(msg='bucket %s exists but these credentials may not access it (403); bucket '
                                          'names are global on AWS: is it another account\'s?' % self.name,
                                      bucket=self.name)
            self.module.fail_json(msg='bucket %s: HeadBucket failed: %s' % (self.name, exc), bucket=self.name,
                                  error_code=_error_code(exc) or None)
        except BotoCoreError as exc:
            self.module.fail_json(msg='bucket %s: cannot reach the store: %s' % (self.name, exc), bucket=self.name)
        headers = response.get('ResponseMetadata', {}).get('HTTPHeaders', {})
        return True, headers.get('x-amz-bucket-region')

    def region(self, header_region):
        try:
            location = self.client.get_bucket_location(Bucket=self.name).get('LocationConstraint')
            return normalize_region(location)
        except (BotoCoreError, ClientError) as exc:
            if header_region:
                return header_region
            self.module.fail_json(msg='bucket %s: cannot find its region (GetBucketLocation: %s); set '
                                      'check_region: false for stores that do not implement it' % (self.name, exc),
                                  bucket=self.name)

    def state(self):
        """The bucket's managed settings in the module's normalized form."""
        versioning = (self.call('reading versioning', 'get_bucket_versioning', Bucket=self.name) or {}).get('Status')
        encryption = {'algorithm': 'none', 'kms_key_id': None}
        answer = self._read('default encryption', 'get_bucket_encryption',
                            ('ServerSideEncryptionConfigurationNotFoundError',))
        rules = ((answer or {}).get('ServerSideEncryptionConfiguration') or {}).get('Rules') or []
        if rules:
            default = rules[0].get('ApplyServerSideEncryptionByDefault') or {}
            encryption = {'algorithm': default.get('SSEAlgorithm', 'none'), 'kms_key_id': default.get('KMSMasterKeyID')}
        answer = self._read('public access block', 'get_public_access_block', ('NoSuchPublicAccessBlockConfiguration',))
        flags = (answer or {}).get('PublicAccessBlockConfiguration') or {}
        answer = self._read('lifecycle rules', 'get_bucket_lifecycle_configuration', ('NoSuchLifecycleConfiguration',))
        lifecycle_rules = (answer or {}).get('Rules') or []
        answer = self._read('object lock', 'get_object_lock_configuration',
                            ('ObjectLockConfigurationNotFoundError', 'ObjectLockConfigurationNotFound'))
        lock = (answer or {}).get('ObjectLockConfiguration') or {}
        retention = (lock.get('Rule') or {}).get('DefaultRetention') or {}
        # Locks given in years are shown in days (a year is 365 days for S3 object lock).
        days = retention.get('Days') or ((retention.get('Years') or 0) * 365) or None
        return {
            'exists': True,
            'versioning': versioning or 'Disabled',
            'encryption': encryption,
            'public_access_block': dict((f, bool(flags.get(f, False))) for f in PUBLIC_ACCESS_FLAGS),
            'lifecycle_rules': lifecycle_rules,
            'object_lock': {'enabled': lock.get('ObjectLockEnabled') == 'Enabled',
                            'mode': retention.get('Mode'), 'days': days},
        }


def empty_state():
    return {'exists': False, 'versioning': 'Disabled', 'encryption': {'algorithm': 'none', 'kms_key_id': None},
            'public_access_block': dict((f, False) for f in PUBLIC_ACCESS_FLAGS), 'lifecycle_rules': [],
            'object_lock': {'enabled': False, 'mode': None, 'days': None}}


def desired_state(module, before, created):
    """The bucket's settings after the run, from the options and what the bucket has now."""
    p = module.params
    after = copy.deepcopy(before)
    after['exists'] = True
    lock = p['object_lock']
    if lock:
        if before['exists'] and not before['object_lock']['enabled']:
            module.fail_json(msg='bucket %s exists without Object Lock, and Object Lock can only be enabled when a '
                                 'bucket is created: create a new bucket with object_lock, copy the backups over '
                                 'and point the agent at it (or remove object_lock)' % p['name'], bucket=p['name'])
        after['object_lock'] = {'enabled': True, 'mode': lock['mode'], 'days': lock['days']}
        if created:
            after['versioning'] = 'Enabled'  # S3 enables versioning together with Object Lock
    if p['versioning'] is True:
        after['versioning'] = 'Enabled'
    elif p['versioning'] is False:
        if after['object_lock']['enabled']:
            module.fail_json(msg='versioning: false: bucket %s has (or gets) Object Lock, which needs versioning; '
                                 'versioning of such a bucket cannot be suspended' % p['name'], bucket=p['name'])
        if before['versioning'] != 'Disabled':
            after['versioning'] = 'Suspended'
    if p['encryption'] is not None:
        if p['encryption'] == 'aws:kms':
            after['encryption'] = {'algorithm': 'aws:kms', 'kms_key_id': p['kms_key_id']}
        else:
            after['encryption'] = {'algorithm': p['encryption'], 'kms_key_id': None}
    if p['public_access_block'] is not None:
        after['public_access_block'] = dict((f, p['public_access_block']) for f in PUBLIC_ACCESS_FLAGS)
    return after


def derive_lifecycle(module, after_versioning):
    """Our rules and their warnings, or a failure listing every contradiction."""
    p = module.params
    try:
        rules, warnings = lifecycle.derive(
            retention=p['retention'], margin_days=p['expiration_margin_days'], expire=p['expire'],
            transitions=p['transitions'], abort_incomplete_multipart_days=p['abort_incomplete_multipart_days'],
            noncurrent_version_expiration_days=p['noncurrent_version_expiration_days'],
            versioning=after_versioning == 'Enabled', prefix=p['prefix'])
    except lifecycle.LifecycleError as exc:
        module.fail_json(msg='contradictory lifecycle settings: %s' % exc, problems=exc.problems, bucket=p['name'])
    return rules, warnings


def make_client(module):
    p = module.params
    session = boto3.session.Session(
        aws_access_key_id=p['access_key'], aws_secret_access_key=p['secret_key'],
        aws_session_token=p['session_token'], profile_name=p['profile'], region_name=p['region'])
    config = {'s3': {'addressing_style': 'path'}} if p['force_path_style'] else {}
    if p['endpoint_url']:
        # boto3 >= 1.36 sends CRC checksums on every request by default; MinIO/Ceph reject or mishandle them.
        config.update(request_checksum_calculation='when_required', response_checksum_validation='when_required')
    try:
        client_config = Config(**config)
    except TypeError:  # botocore older than 1.36 knows neither option and sends no default checksums
        config.pop('request_checksum_calculation', None)
        config.pop('response_checksum_validation', None)
        client_config = Config(**config)
    verify = p['ca_bundle'] if p['ca_bundle'] else p['validate_certs']
    return session.client('s3', endpoint_url=p['endpoint_url'] or None, verify=verify, config=client_config)


def diff_view(state):
    view = copy.deepcopy(state)
    view['lifecycle_rules'] = lifecycle.jsonable(view['lifecycle_rules'])
    return view


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_together=[('access_key', 'secret_key')],
        mutually_exclusive=[('profile', 'access_key')],
        required_if=[('encryption', 'aws:kms', ['kms_key_id'])],
    )
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib('boto3'), exception=BOTO3_IMPORT_ERROR)
    p = module.params
    name = p['name']
    if p['encryption'] == 'none' and not p['endpoint_url']:
        module.fail_json(msg='encryption: none: AWS encrypts every new object with SSE-S3 whatever the bucket says, '
                             'so this setting could never be reached; use AES256 (or aws:kms)', bucket=name)
    lock_problems = lifecycle.object_lock_problems(p['object_lock'], p['versioning'])
    if lock_problems:
        module.fail_json(msg='; '.join(lock_problems), problems=lock_problems, bucket=name)

    client = make_client(module)
    bucket = Bucket(module, client, name)
    exists, header_region = bucket.exists()
    if exists:
        region = bucket.region(header_region) if p['check_region'] else p['region']
        if p['check_region'] and region != p['region']:
            module.fail_json(msg='bucket %s is in region %s, not %s: backups must stay where region says (data '
                                 'locality); fix region, or move the data' % (name, region, p['region']),
                             bucket=name, region=region, expected_region=p['region'])
        before = bucket.state()
    else:
        if not p['create']:
            module.fail_json(msg='bucket %s does not exist (create: false)' % name, bucket=name)
        region = p['region']
        before = empty_state()

    after = desired_state(module, before, created=not exists)
    warnings = []
    current_rules = before['lifecycle_rules']
    if p['lifecycle']:
        ours, warnings = derive_lifecycle(module, after['versioning'])
        warnings.extend(lifecycle.foreign_rule_warnings(current_rules, p['prefix'], p['expiration_margin_days'],
                                                        p['retention']))
        lifecycle_changed = not lifecycle.same_rules(current_rules, ours)
        after['lifecycle_rules'] = lifecycle.merge(current_rules, ours) if lifecycle_changed else current_rules
    else:
        lifecycle_changed = False
    warnings.extend(lifecycle.object_lock_warnings(p['object_lock'], p['retention'], p['expiration_margin_days'],
                                                   p['expire']))
    for warning in warnings:
        module.warn(warning)

    actions = []
    if not exists:
        actions.append('create_bucket %s' % region + (' with object lock' if p['object_lock'] else ''))
    if after['public_access_block'] != before['public_access_block']:
        actions.append('put_public_access_block' if any(after['public_access_block'].values())
                       else 'delete_public_access_block')
    if after['encryption'] != before['encryption']:
        actions.append('put_bucket_encryption %s' % after['encryption']['algorithm']
                       if after['encryption']['algorithm'] != 'none' else 'delete_bucket_encryption')
    # A bucket created with Object Lock has versioning enabled already.
    if after['versioning'] != before['versioning'] and not (not exists and p['object_lock']):
        actions.append('put_bucket_versioning %s' % after['versioning'])
    if after['object_lock'] != before['object_lock'] and p['object_lock']:
        actions.append('put_object_lock_configuration %s %d days' % (after['object_lock']['mode'],
                                                                     after['object_lock']['days']))
    if lifecycle_changed:
        actions.append('put_bucket_lifecycle_configuration' if after['lifecycle_rules']
                       else 'delete_bucket_lifecycle')

    changed = bool(actions)
    if changed and not module.check_mode:
        apply_changes(bucket, module, before, region, after)

    before_view = diff_view(before) if exists else {'exists': False}
    after_view = diff_view(after)
    before_view['region'] = region if exists else None
    after_view['region'] = region
    module.exit_json(changed=changed, bucket=name, region=region, created=not exists,
                     lifecycle_rules=lifecycle.jsonable(after['lifecycle_rules']), actions=actions,
                     diff=dict(before=before_view, after=after_view))


def apply_changes(bucket, module, before, region, after):
    """Write what differs, safest first: the public access block before anything else."""
    p = module.params
    name = p['name']
    if not before['exists']:
        args = dict(Bucket=name)
        if region != 'us-east-1':
            args['CreateBucketConfiguration'] = {'LocationConstraint': region}
        if p['object_lock']:
            args['ObjectLockEnabledForBucket'] = True
        bucket.call('creating the bucket', 'create_bucket', **args)
        before = empty_state()
        if p['object_lock']:
            before['versioning'] = 'Enabled'
            before['object_lock']['enabled'] = True
    if after['public_access_block'] != before['public_access_block']:
        if any(after['public_access_block'].values()):
            bucket.call('setting the public access block', 'put_public_access_block', Bucket=name,
                        PublicAccessBlockConfiguration=after['public_access_block'])
        else:
            bucket.call('removing the public access block', 'delete_public_access_block', Bucket=name)
    if after['encryption'] != before['encryption']:
        if after['encryption']['algorithm'] == 'none':
            bucket.call('removing default encryption', 'delete_bucket_encryption', Bucket=name)
        else:
            default = {'SSEAlgorithm': after['encryption']['algorithm']}
            rule = {'ApplyServerSideEncryptionByDefault': default}
            if after['encryption']['algorithm'] == 'aws:kms':
                default['KMSMasterKeyID'] = after['encryption']['kms_key_id']
                rule['BucketKeyEnabled'] = True
            bucket.call('setting default encryption', 'put_bucket_encryption', Bucket=name,
                        ServerSideEncryptionConfiguration={'Rules': [rule]})
    if after['versioning'] != before['versioning']:
        bucket.call('setting versioning', 'put_bucket_versioning', Bucket=name,
                    VersioningConfiguration={'Status': after['versioning']})
    if p['object_lock'] and after['object_lock'] != before['object_lock']:
        bucket.call('setting the object lock default retention', 'put_object_lock_configuration', Bucket=name,
                    ObjectLockConfiguration={'ObjectLockEnabled': 'Enabled', 'Rule': {'DefaultRetention': {
                        'Mode': after['object_lock']['mode'], 'Days': after['object_lock']['days']}}})
    if p['lifecycle'] and not lifecycle.same_rules(before['lifecycle_rules'],
                                                   [r for r in after['lifecycle_rules'] if lifecycle.is_ours(r)]):
        if after['lifecycle_rules']:
            bucket.call('writing lifecycle rules', 'put_bucket_lifecycle_configuration', Bucket=name,
                        LifecycleConfiguration={'Rules': after['lifecycle_rules']})
        else:
            bucket.call('removing lifecycle rules', 'delete_bucket_lifecycle', Bucket=name)


if __name__ == '__main__':
    main()
