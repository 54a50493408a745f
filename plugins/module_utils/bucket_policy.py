# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""IAM policy documents of the bucket's three duties, per cluster: pure functions, no boto3.

The repository layout (agent/src/pg_backup/repository.py) puts everything of one cluster under
``<prefix>/<cluster>/``: ``backups/<id>/`` (objects, then ``manifest.json``), ``wal/`` (``archive.json``,
segments, history files, ``conflicts/``), ``audit/`` and ``erasures/``. The documents follow it:

- writer, one document per cluster (the IAM user or role of that cluster's database hosts): creates
  objects under its own cluster prefix only, and only with ``If-None-Match: *`` (S3 "enforce
  conditional writes": ``PutObject`` and ``CompleteMultipartUpload`` are allowed only when the request
  carries ``s3:if-none-match`` = ``*``; ``CreateMultipartUpload`` and ``UploadPart``, which take no
  conditional header, are exempted through ``s3:ObjectCreationOperation`` = false). So a host can
  neither overwrite an object nor write into another cluster's prefix. It reads only what it needs:
  the catalog (manifests), its audit trail and erasure records, and ``wal/`` (the archive identity, and
  the HEAD a WAL push makes of an existing segment, which S3 authorises as ``s3:GetObject``: ciphertext
  the host cannot decrypt in public-key mode). Listing is limited to its prefix (``s3:prefix``).
- pruner, one document per cluster (the prune job): deletes under ``backups/`` and ``wal/`` of its
  cluster, aborts abandoned uploads, writes audit records (conditionally, like the writer). Which
  backups may go (retention; never the newest of a tier; never a member a retained incremental needs)
  is decided by the agent's planner (retention.py, prune.py): IAM cannot express it. What IAM does
  guarantee: no ``s3:DeleteObjectVersion`` (on a versioned bucket a delete only adds a delete marker,
  the data stays until the noncurrent-version lifecycle rule removes it) and no Object Lock bypass.
- restorer, one document for the clusters given (restore, PITR, verify, drill and extract hosts): read
  only -- ``GetObject``, ``GetObjectVersion`` (restores read the version a manifest records),
  ``ListBucket``, ``ListBucketVersions``, ``RestoreObject`` for archived tiers, the Object Lock
  settings the compliance report states (``GetObjectRetention``, ``GetObjectLegalHold``,
  ``GetBucketObjectLockConfiguration``) -- plus conditional
  creates of its own audit records; nothing is deleted or overwritten.

Every document ends with an explicit Deny of what must never happen (deletes of versions, Object Lock
bypass, bucket policy, lifecycle and versioning changes), so an Allow granted elsewhere cannot add it.

Used by the ``bucket_policies`` filter (the bucket role writes the documents) and the unit tests;
``documents()`` is what both call.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

DUTIES = ('writer', 'pruner', 'restorer')
#: Duties with one document per cluster; the restorer's document covers every cluster given.
PER_CLUSTER_DUTIES = ('writer', 'pruner')
PARTITIONS = ('aws', 'aws-cn', 'aws-us-gov')
# The agent's cluster names (agent/src/pg_backup/config.py): safe in a key and in an ARN.
CLUSTER_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')

#: The conditions of a create-if-absent write (S3 "Enforce conditional writes", example 1).
CONDITIONAL_CREATE = {'Null': {'s3:if-none-match': 'false'}, 'StringEquals': {'s3:if-none-match': '*'}}
#: CreateMultipartUpload and UploadPart accept no conditional header; the object is created (and the
#: condition checked) by CompleteMultipartUpload.
MULTIPART_PARTS = {'Bool': {'s3:ObjectCreationOperation': 'false'}}

#: Never allowed to any duty, whatever else grants it.
NEVER = ['s3:DeleteObjectVersion', 's3:BypassGovernanceRetention', 's3:PutObjectRetention',
         's3:PutObjectLegalHold', 's3:PutLifecycleConfiguration', 's3:PutBucketVersioning',
         's3:PutBucketObjectLockConfiguration', 's3:PutBucketPolicy', 's3:DeleteBucketPolicy',
         's3:DeleteBucket']


class PolicyError(ValueError):
    """Inputs the documents cannot be made from; the message says which and what to do."""


def key_prefix(prefix):
    """``<prefix>/`` as the agent joins keys, or '' for the whole bucket."""
    prefix = (prefix or '').strip('/')
    return prefix + '/' if prefix else ''


def cluster_names(clusters, bucket=None):
    """Sorted, unique cluster names from names or items of the agent role's ``agent_clusters``; an item
    whose ``config.repository.s3.bucket`` names another bucket than ``bucket`` is left out."""
    names = set()
    for item in clusters or []:
        if isinstance(item, dict):
            other = (((item.get('config') or {}).get('repository') or {}).get('s3') or {}).get('bucket')
            if bucket and other and other != bucket:
                continue
            name = item.get('name')
        else:
            name = item
        if not isinstance(name, str) or not CLUSTER_NAME.match(name):
            raise PolicyError('cluster name %r cannot be a key prefix: use letters, digits, "_", "." and "-"' % (name,))
        names.add(name)
    return sorted(names)


class _Arns(object):
    def __init__(self, bucket, prefix, partition):
        if partition not in PARTITIONS:
            raise PolicyError('partition %r is not one of %s' % (partition, ', '.join(PARTITIONS)))
        if not bucket:
            raise PolicyError('a bucket name is required')
        self.bucket = 'arn:%s:s3:::%s' % (partition, bucket)
        self.prefix = key_prefix(prefix)

    def cluster_key(self, cluster, rest=''):
        """The key (pattern) ``<prefix>/<cluster>/<rest>``."""
        return '%s%s/%s' % (self.prefix, cluster, rest)

    def objects(self, cluster, rest='*'):
        return '%s/%s' % (self.bucket, self.cluster_key(cluster, rest))


def _statement(sid, actions, resources, condition=None, effect='Allow'):
    statement = {'Sid': sid, 'Effect': effect, 'Action': list(actions),
                 'Resource': resources if isinstance(resources, list) else [resources]}
    if condition:
        statement['Condition'] = condition
    return statement


def _sid(text, cluster):
    """Statement ids are alphanumeric: ``WriteCluster`` + the cluster name without punctuation."""
    return text + re.sub(r'[^A-Za-z0-9]', '', cluster.title())


def _listing(arns, clusters):
    """ListBucket (and ListBucketVersions) limited to the clusters' prefixes with s3:prefix, and
    GetBucketLocation: the agent's reachability probe (HeadBucket is authorised as s3:ListBucket without an
    s3:prefix, which the condition refuses)."""
    return [
        _statement('ListTheClusters', ['s3:ListBucket'], arns.bucket,
                   {'StringLike': {'s3:prefix': [arns.cluster_key(c, '*') for c in clusters]}}),
        _statement('CheckTheRegion', ['s3:GetBucketLocation'], arns.bucket),
    ]


def _conditional_creates(arns, cluster, what, rest):
    """PutObject (and the tags it carries) of ``what`` under ``rest`` of the cluster, create-if-absent only."""
    resource = arns.objects(cluster, rest)
    return [
        _statement(_sid('Create%sOfCluster' % what, cluster), ['s3:PutObject', 's3:PutObjectTagging'], resource,
                   CONDITIONAL_CREATE),
        _statement(_sid('UploadPartsOf%sOfCluster' % what, cluster), ['s3:PutObject'], resource, MULTIPART_PARTS),
    ]


def _never(arns):
    return _statement('NeverDestroyOrRewriteHistory', NEVER, [arns.bucket, arns.bucket + '/*'], effect='Deny')


def writer(bucket, prefix, cluster, partition='aws'):
    """The document of one cluster's database hosts (backups, WAL archiving, audit records)."""
    arns = _Arns(bucket, prefix, partition)
    statements = _listing(arns, [cluster])
    statements += _conditional_creates(arns, cluster, 'Objects', '*')
    statements += [
        _statement(_sid('ResumeOrAbandonUploadsOfCluster', cluster),
                   ['s3:AbortMultipartUpload', 's3:ListMultipartUploadParts'], arns.objects(cluster)),
        _statement(_sid('ReadCatalogAndWalOfCluster', cluster), ['s3:GetObject'], [
            arns.objects(cluster, 'backups/*/manifest.json'),
            arns.objects(cluster, 'wal/*'),
            arns.objects(cluster, 'audit/*'),
            arns.objects(cluster, 'erasures/*'),
        ]),
        _statement('NeverDeleteOrRetag',
                   ['s3:DeleteObject', 's3:DeleteObjectTagging', 's3:DeleteObjectVersionTagging',
                    's3:PutObjectVersionTagging'],
                   [arns.bucket + '/*'], effect='Deny'),
        _never(arns),
    ]
    return {'Version': '2012-10-17', 'Statement': statements}


def pruner(bucket, prefix, cluster, partition='aws'):
    """The document of one cluster's prune job."""
    arns = _Arns(bucket, prefix, partition)
    statements = _listing(arns, [cluster])
    statements += [
        _statement('ListAbandonedUploads', ['s3:ListBucketMultipartUploads'], arns.bucket),
        _statement(_sid('ReadCatalogOfCluster', cluster), ['s3:GetObject'], [
            arns.objects(cluster, 'backups/*/manifest.json'),
            arns.objects(cluster, 'wal/archive.json'),
            arns.objects(cluster, 'audit/*'),
        ]),
        _statement(_sid('DeleteExpiredBackupsAndWalOfCluster', cluster), ['s3:DeleteObject'], [
            arns.objects(cluster, 'backups/*'),
            arns.objects(cluster, 'wal/*'),
        ]),
        _statement(_sid('AbortAbandonedUploadsOfCluster', cluster),
                   ['s3:AbortMultipartUpload', 's3:ListMultipartUploadParts'], arns.objects(cluster)),
    ]
    statements += _conditional_creates(arns, cluster, 'AuditRecords', 'audit/*')
    statements.append(_never(arns))
    return {'Version': '2012-10-17', 'Statement': statements}


def restorer(bucket, prefix, clusters, partition='aws'):
    """The document of restore, verify, drill and extract hosts: reads every given cluster."""
    arns = _Arns(bucket, prefix, partition)
    statements = _listing(arns, clusters)
    statements[0]['Action'].append('s3:ListBucketVersions')
    statements.append(_statement('ReadAndRetrieveBackups',
                                 ['s3:GetObject', 's3:GetObjectVersion', 's3:RestoreObject',
                                  's3:GetObjectRetention', 's3:GetObjectLegalHold'],
                                 [arns.objects(c) for c in clusters]))
    # The compliance report states the bucket's Object Lock mode and each object's retain-until date.
    statements.append(_statement('ReadObjectLockConfiguration', ['s3:GetBucketObjectLockConfiguration'],
                                 [arns.bucket]))
    for cluster in clusters:
        statements += _conditional_creates(arns, cluster, 'AuditRecords', 'audit/*')
    statements += [
        _statement('NeverDeleteAnything', ['s3:DeleteObject', 's3:AbortMultipartUpload'],
                   [arns.bucket + '/*'], effect='Deny'),
        _never(arns),
    ]
    return {'Version': '2012-10-17', 'Statement': statements}


def documents(bucket, prefix='', clusters=None, duties=DUTIES, partition='aws'):
    """Every document to write: a list of ``{name, duty, cluster, document}``, ``name`` being
    ``<duty>-<cluster>`` for writer and pruner and ``restorer`` for the restorer (None: no cluster).

    ``clusters``: names or ``agent_clusters`` items (see :func:`cluster_names`); at least one is needed."""
    unknown = sorted(set(duties) - set(DUTIES))
    if unknown:
        raise PolicyError('unknown duties %s (known: %s)' % (', '.join(unknown), ', '.join(DUTIES)))
    names = cluster_names(clusters, bucket)
    alike = {}
    for name in names:
        alike.setdefault(_sid('', name), []).append(name)
    alike = [' and '.join(group) for group in alike.values() if len(group) > 1]
    if alike:
        raise PolicyError('clusters %s differ only in case or punctuation, which statement ids cannot tell '
                          'apart: rename one' % '; '.join(alike))
    if duties and not names:
        raise PolicyError('no cluster stores in bucket %s: the policies are per cluster prefix; set '
                          'bucket_policy_clusters (or the hosts\' agent_clusters)' % bucket)
    result = []
    for duty in DUTIES:
        if duty not in duties:
            continue
        if duty in PER_CLUSTER_DUTIES:
            make = writer if duty == 'writer' else pruner
            for cluster in names:
                result.append({'name': '%s-%s' % (duty, cluster), 'duty': duty, 'cluster': cluster,
                               'document': make(bucket, prefix, cluster, partition)})
        else:
            result.append({'name': duty, 'duty': duty, 'cluster': None,
                           'document': restorer(bucket, prefix, names, partition)})
    return result
