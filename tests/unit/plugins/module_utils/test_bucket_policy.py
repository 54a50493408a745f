# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The IAM policy documents of the bucket's duties: the specification of what each credential may do."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import fnmatch
import json

import pytest

from ansible_collections.miometry.pg_backup.plugins.module_utils import bucket_policy as bp

BUCKET = 'acme-pg'
ARN = 'arn:aws:s3:::acme-pg'
WRITES = ('s3:PutObject', 's3:PutObjectTagging', 's3:DeleteObject', 's3:DeleteObjectVersion',
          's3:AbortMultipartUpload', 's3:RestoreObject')


def allows(document, action):
    """The Allow statements that grant ``action``."""
    return [s for s in document['Statement'] if s['Effect'] == 'Allow' and action in s['Action']]


def denies(document, action):
    return any(s['Effect'] == 'Deny' and action in s['Action'] for s in document['Statement'])


def granted(document, action, key, **request):
    """Whether ``action`` on object ``key`` is allowed, evaluating the conditions the documents use
    (Null, StringEquals, Bool on the request's keys) and explicit denies, the way IAM does."""
    resource = '%s/%s' % (ARN, key)

    def applies(statement):
        if action not in statement['Action']:
            return False
        if not any(fnmatch.fnmatchcase(resource, r) for r in statement['Resource']):
            return False
        for operator, pairs in statement.get('Condition', {}).items():
            for name, expected in pairs.items():
                value = request.get(name)
                if operator == 'Null' and (value is None) != (expected == 'true'):
                    return False
                if operator == 'StringEquals' and value != expected:
                    return False
                if operator == 'Bool' and str(value).lower() != expected:
                    return False
                assert operator in ('Null', 'StringEquals', 'Bool'), operator
        return True

    matching = [s for s in document['Statement'] if applies(s)]
    return any(s['Effect'] == 'Allow' for s in matching) and not any(s['Effect'] == 'Deny' for s in matching)


def docs(**kwargs):
    return dict((d['name'], d['document']) for d in bp.documents(BUCKET, **kwargs))


@pytest.fixture
def policies():
    return docs(prefix='/prod/', clusters=['main', 'billing'])


def test_one_writer_and_one_pruner_per_cluster_and_one_restorer(policies):
    assert sorted(policies) == ['pruner-billing', 'pruner-main', 'restorer', 'writer-billing', 'writer-main']
    for document in policies.values():
        assert document['Version'] == '2012-10-17'
        json.dumps(document)  # a plain JSON document
        sids = [s['Sid'] for s in document['Statement']]
        assert len(sids) == len(set(sids)) and all(sid.isalnum() for sid in sids), sids


@pytest.mark.parametrize('duty', ['writer', 'pruner'])
def test_per_cluster_documents_touch_only_their_cluster_prefix(policies, duty):
    document = policies['%s-main' % duty]
    for statement in document['Statement']:
        if statement['Effect'] != 'Allow':
            continue
        for resource in statement['Resource']:
            assert resource == ARN or resource.startswith(ARN + '/prod/main/'), (statement['Sid'], resource)
    listing = allows(document, 's3:ListBucket')[0]
    assert listing['Condition'] == {'StringLike': {'s3:prefix': ['prod/main/*']}}
    assert not granted(document, 's3:PutObject', 'prod/billing/wal/x', **{'s3:if-none-match': '*'})


def test_no_write_is_granted_outside_a_cluster_prefix(policies):
    for name, document in policies.items():
        for statement in document['Statement']:
            if statement['Effect'] != 'Allow' or not set(WRITES) & set(statement['Action']):
                continue
            for resource in statement['Resource']:
                assert resource.startswith(ARN + '/prod/'), (name, statement['Sid'], resource)
                cluster = resource[len(ARN + '/prod/'):].split('/', 1)[0]
                assert cluster in ('main', 'billing'), (name, statement['Sid'], resource)


@pytest.mark.parametrize('duty', ['writer', 'pruner', 'restorer'])
def test_objects_are_created_only_with_if_none_match(policies, duty):
    document = policies[duty if duty == 'restorer' else duty + '-main']
    key = 'prod/main/audit/2026/12/x.json'
    # PutObject and CompleteMultipartUpload (authorised as s3:PutObject): only create-if-absent.
    assert granted(document, 's3:PutObject', key, **{'s3:if-none-match': '*', 's3:ObjectCreationOperation': True})
    assert not granted(document, 's3:PutObject', key, **{'s3:ObjectCreationOperation': True})
    assert not granted(document, 's3:PutObject', key, **{'s3:if-none-match': '"abc"',
                                                         's3:ObjectCreationOperation': True})
    # CreateMultipartUpload and UploadPart take no conditional header: exempted.
    assert granted(document, 's3:PutObject', key, **{'s3:ObjectCreationOperation': False})
    # Tags only with a new object; a stand-alone re-tagging carries no If-None-Match.
    assert granted(document, 's3:PutObjectTagging', key, **{'s3:if-none-match': '*'})
    assert not granted(document, 's3:PutObjectTagging', key)
    for statement in allows(document, 's3:PutObject'):
        assert statement.get('Condition') in (bp.CONDITIONAL_CREATE, bp.MULTIPART_PARTS), statement


def test_writer_reads_exactly_what_backup_and_wal_push_need(policies):
    writer = policies['writer-main']
    for key in ('prod/main/backups/20261204T000000Z-logical-daily/manifest.json', 'prod/main/wal/archive.json',
                'prod/main/wal/00000001/000000010000000000000001.zst.gpg', 'prod/main/audit/2026/12/r.json',
                'prod/main/erasures/x.json.zst.gpg'):
        assert granted(writer, 's3:GetObject', key), key
    for key in ('prod/main/backups/20261204T000000Z-logical-daily/db.dump.zst.gpg', 'prod/billing/wal/archive.json',
                'prod/billing/backups/b/manifest.json'):
        assert not granted(writer, 's3:GetObject', key), key
    assert not allows(writer, 's3:GetObjectVersion')
    for action in ('s3:DeleteObject', 's3:DeleteObjectVersion', 's3:BypassGovernanceRetention',
                   's3:PutObjectRetention', 's3:PutBucketPolicy', 's3:PutLifecycleConfiguration'):
        assert denies(writer, action), action
        assert not allows(writer, action), action


def test_pruner_deletes_backups_and_wal_of_its_cluster_never_versions_nor_locked_objects(policies):
    pruner = policies['pruner-main']
    assert granted(pruner, 's3:DeleteObject', 'prod/main/backups/b/db.dump.zst.gpg')
    assert granted(pruner, 's3:DeleteObject', 'prod/main/wal/00000001/x.zst.gpg')
    for key in ('prod/main/audit/2026/12/r.json', 'prod/main/erasures/e.json.zst.gpg', 'prod/billing/backups/b/m'):
        assert not granted(pruner, 's3:DeleteObject', key), key
    for action in ('s3:DeleteObjectVersion', 's3:BypassGovernanceRetention', 's3:PutObjectRetention',
                   's3:PutObjectLegalHold', 's3:PutBucketObjectLockConfiguration', 's3:PutBucketVersioning'):
        assert denies(pruner, action), action
    assert granted(pruner, 's3:GetObject', 'prod/main/backups/b/manifest.json')
    assert not granted(pruner, 's3:GetObject', 'prod/main/backups/b/db.dump.zst.gpg')


def test_restorer_reads_every_cluster_and_its_versions_and_never_deletes(policies):
    restorer = policies['restorer']
    for key in ('prod/main/backups/b/db.dump.zst.gpg', 'prod/billing/wal/00000001/x.zst.gpg'):
        for action in ('s3:GetObject', 's3:GetObjectVersion', 's3:RestoreObject', 's3:GetObjectRetention',
                       's3:GetObjectLegalHold'):
            assert granted(restorer, action, key), (action, key)
    # the compliance report reads the bucket's Object Lock mode; nobody may change it
    assert allows(restorer, 's3:GetBucketObjectLockConfiguration')
    assert denies(restorer, 's3:PutBucketObjectLockConfiguration')
    listing = allows(restorer, 's3:ListBucket')[0]
    assert 's3:ListBucketVersions' in listing['Action']
    assert sorted(listing['Condition']['StringLike']['s3:prefix']) == ['prod/billing/*', 'prod/main/*']
    assert not granted(restorer, 's3:PutObject', 'prod/main/backups/b/manifest.json', **{'s3:if-none-match': '*'})
    for action in ('s3:DeleteObject', 's3:DeleteObjectVersion', 's3:AbortMultipartUpload'):
        assert denies(restorer, action) and not allows(restorer, action), action


def test_whole_bucket_and_other_partitions():
    policies = docs(clusters=['main'], partition='aws-cn', duties=['writer'])
    assert list(policies) == ['writer-main']
    resources = [r for s in policies['writer-main']['Statement'] for r in s['Resource']]
    assert 'arn:aws-cn:s3:::acme-pg/main/*' in resources
    assert all(r.startswith('arn:aws-cn:s3:::acme-pg') for r in resources)


def test_clusters_from_agent_clusters_items_leave_out_other_buckets():
    items = [{'name': 'main', 'config': {'repository': {'s3': {'bucket': BUCKET}}}},
             {'name': 'elsewhere', 'config': {'repository': {'s3': {'bucket': 'other'}}}},
             {'name': 'plain'}, 'main']
    assert bp.cluster_names(items, BUCKET) == ['main', 'plain']


@pytest.mark.parametrize('kwargs, message', [
    (dict(clusters=[]), 'no cluster stores in bucket acme-pg'),
    (dict(clusters=['a/b']), "cluster name 'a/b' cannot be a key prefix"),
    (dict(clusters=['main'], duties=['admin']), 'unknown duties admin'),
    (dict(clusters=['main'], partition='azure'), "partition 'azure'"),
    (dict(clusters=['main-db', 'main_db', 'x']), 'clusters main-db and main_db differ only in case or punctuation'),
])
def test_bad_inputs_fail_with_one_clear_message(kwargs, message):
    with pytest.raises(bp.PolicyError, match=message.replace('(', r'\(')):
        bp.documents(BUCKET, **kwargs)
