# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""S3 lifecycle rules derived from the agent's retention settings: pure functions, no boto3.

The agent prunes by manifests (``agent/src/pg_backup/retention.py``); S3 lifecycle rules are only
a backstop and must never expire an object before the agent would. So each tier's expiration is
the tier's retention upper bound (``retention.expiry_days``: daily days, weeks * 7, months * 31)
plus a margin. Objects are matched by the ``tier`` tag every object of the agent carries (kind and
cluster do not matter to retention). Rules whose ID starts with ``pg-backup-`` belong to this
collection; every other rule in the bucket is preserved as it is.

Used by the ``backup_lifecycle`` module (which applies the rules; amazon.aws.s3_bucket does the bucket's
other settings) and its unit tests; nothing here talks to S3.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import datetime

TIERS = ('daily', 'weekly', 'monthly')
RULE_ID_PREFIX = 'pg-backup-'
TIER_TAG = 'tier'

# The agent's defaults (RetentionSettings in agent/src/pg_backup/config.py; tests/roles/test_retention_defaults.py
# ties this copy, expiry_days and the bucket role's defaults to the agent).
DEFAULT_RETENTION = {'daily_days': 30, 'weekly_weeks': 12, 'monthly_months': 84}
RETENTION_KEYS = ('daily_days', 'weekly_weeks', 'monthly_months')

# Classes a lifecycle rule may transition to, in the order S3 allows transitions ("waterfall").
TRANSITION_CLASSES = ('STANDARD_IA', 'INTELLIGENT_TIERING', 'ONEZONE_IA', 'GLACIER_IR', 'GLACIER', 'DEEP_ARCHIVE')
# Minimum storage duration billed by each class: deleting or moving an object earlier costs the rest.
MINIMUM_STORAGE_DAYS = {'STANDARD_IA': 30, 'ONEZONE_IA': 30, 'GLACIER_IR': 90, 'GLACIER': 90, 'DEEP_ARCHIVE': 180}
# S3 rejects transitions to the infrequent-access classes before an object is 30 days old.
EARLIEST_TRANSITION_DAYS = {'STANDARD_IA': 30, 'ONEZONE_IA': 30}


class LifecycleError(ValueError):
    """Settings that would produce contradictory or invalid rules; ``problems`` lists each one."""

    def __init__(self, problems):
        self.problems = list(problems)
        super(LifecycleError, self).__init__('; '.join(self.problems))


def rule_id(*parts):
    return RULE_ID_PREFIX + '-'.join(parts)


def is_ours(rule):
    return str(rule.get('ID') or '').startswith(RULE_ID_PREFIX)


def key_prefix(prefix):
    """The key prefix of the repository (``<prefix>/``), or '' for the whole bucket; as the agent joins keys."""
    prefix = (prefix or '').strip('/')
    return prefix + '/' if prefix else ''


def retention_settings(retention=None):
    """The agent's retention settings with its defaults filled in and checked."""
    merged = dict(DEFAULT_RETENTION)
    merged.update(dict((k, v) for k, v in (retention or {}).items() if v is not None))
    problems = []
    unknown = sorted(set(merged) - set(RETENTION_KEYS))
    if unknown:
        problems.append('retention: unknown key(s) %s (known: %s)' % (', '.join(unknown), ', '.join(RETENTION_KEYS)))
    for key in RETENTION_KEYS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append('retention.%s must be a whole number >= 1, got %r' % (key, value))
    if problems:
        raise LifecycleError(problems)
    return dict((k, merged[k]) for k in RETENTION_KEYS)


def expiry_days(retention):
    """Upper bound in days of each tier's retention: the agent's ``retention.expiry_days``, same arithmetic."""
    settings = retention_settings(retention)
    return {'daily': settings['daily_days'], 'weekly': settings['weekly_weeks'] * 7,
            'monthly': settings['monthly_months'] * 31}


def expiration_days(retention, margin_days):
    """Day on which S3 expires each tier's objects: after the agent would have pruned them, plus a margin."""
    return dict((tier, days + margin_days) for tier, days in expiry_days(retention).items())


def _tier_filter(prefix, tier):
    tag = {'Key': TIER_TAG, 'Value': tier}
    if prefix:
        return {'And': {'Prefix': prefix, 'Tags': [tag]}}
    return {'Tag': tag}


def _check_transitions(transitions, expirations, agent_days, expire):
    """Validate the transitions of every tier; return (normalized transitions per tier, warnings)."""
    problems, warnings, result = [], [], {}
    transitions = transitions or {}
    unknown = sorted(set(transitions) - set(TIERS))
    if unknown:
        problems.append('transitions: unknown tier(s) %s (tiers: %s)' % (', '.join(unknown), ', '.join(TIERS)))
    for tier in TIERS:
        items = transitions.get(tier) or []
        normalized = []
        for index, item in enumerate(items):
            where = 'transitions.%s[%d]' % (tier, index)
            days, storage_class = (item or {}).get('days'), (item or {}).get('storage_class')
            if isinstance(days, bool) or not isinstance(days, int) or days < 0:
                problems.append('%s.days must be a whole number >= 0, got %r' % (where, days))
                continue
            if storage_class not in TRANSITION_CLASSES:
                problems.append('%s.storage_class must be one of %s, got %r'
                                % (where, ', '.join(TRANSITION_CLASSES), storage_class))
                continue
            earliest = EARLIEST_TRANSITION_DAYS.get(storage_class, 0)
            if days < earliest:
                problems.append('%s: S3 moves objects to %s only when they are at least %d days old, got day %d'
                                % (where, storage_class, earliest, days))
            if expire and days >= expirations[tier]:
                problems.append('%s: transition on day %d to %s is not before the %s tier\'s expiration on day %d '
                                '(retention upper bound %d + margin); S3 would expire the objects first'
                                % (where, days, storage_class, tier, expirations[tier], agent_days[tier]))
            normalized.append({'days': days, 'storage_class': storage_class})
        for before, after in zip(normalized, normalized[1:]):
            if after['days'] <= before['days']:
                problems.append('transitions.%s: days must increase from one transition to the next (%d then %d)'
                                % (tier, before['days'], after['days']))
            elif TRANSITION_CLASSES.index(after['storage_class']) <= TRANSITION_CLASSES.index(before['storage_class']):
                problems.append('transitions.%s: S3 cannot move objects from %s to %s (order: %s)'
                                % (tier, before['storage_class'], after['storage_class'], ', '.join(TRANSITION_CLASSES)))
        warnings.extend(_minimum_duration_warnings(tier, normalized, agent_days[tier],
                                                   expirations[tier] if expire else None))
        result[tier] = normalized
    return result, problems, warnings


def _minimum_duration_warnings(tier, transitions, pruned_day, expiration_day):
    """Warn where an object leaves a class (next transition, prune, expiration) before its minimum duration."""
    warnings = []
    for index, item in enumerate(transitions):
        day, storage_class = item['days'], item['storage_class']
        if index + 1 < len(transitions):
            leaves, how = transitions[index + 1]['days'], 'moved on to %s' % transitions[index + 1]['storage_class']
        elif day < pruned_day:
            leaves, how = pruned_day, 'pruned by the agent (%s retention upper bound)' % tier
        elif expiration_day is not None:
            leaves, how = expiration_day, 'expired by S3'
        else:
            leaves, how = None, None
        if day >= pruned_day:
            warnings.append('transitions.%s: the transition on day %d to %s comes after the agent prunes %s backups '
                            '(day %d); it only affects the newest backup of the tier, which the agent keeps '
                            'whatever its age' % (tier, day, storage_class, tier, pruned_day))
        minimum = MINIMUM_STORAGE_DAYS.get(storage_class)
        if minimum and leaves is not None and leaves - day < minimum:
            details = (tier, storage_class, day, how, leaves, leaves - day, storage_class, minimum)
            warnings.append('transitions.%s: objects moved to %s on day %d are %s on day %d, after %d days; %s is '
                            'billed for at least %d days' % details)
    return warnings


def derive(retention=None, margin_days=30, expire=True, transitions=None, abort_incomplete_multipart_days=7,
           noncurrent_version_expiration_days=30, versioning=False, prefix=''):
    """The collection's lifecycle rules for one repository, and warnings about their cost.

    Returns ``(rules, warnings)``; ``rules`` are in the form boto3's ``put_bucket_lifecycle_configuration``
    takes, sorted by ID. Raises LifecycleError listing every contradiction (a transition on or after the
    expiration, a class S3 refuses, ...).
    """
    problems = []
    if isinstance(margin_days, bool) or not isinstance(margin_days, int) or margin_days < 0:
        problems.append('expiration_margin_days must be a whole number >= 0, got %r' % (margin_days,))
        margin_days = 0
    for name, value in (('abort_incomplete_multipart_days', abort_incomplete_multipart_days),
                        ('noncurrent_version_expiration_days', noncurrent_version_expiration_days)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append('%s must be a whole number >= 0 (0: no rule), got %r' % (name, value))
    try:
        agent_days = expiry_days(retention)
    except LifecycleError as exc:
        raise LifecycleError(exc.problems + problems)
    expirations = dict((tier, days + margin_days) for tier, days in agent_days.items())
    normalized, transition_problems, warnings = _check_transitions(transitions, expirations, agent_days, expire)
    problems.extend(transition_problems)
    if problems:
        raise LifecycleError(problems)

    prefix = key_prefix(prefix)
    rules = []
    for tier in TIERS:
        if expire:
            rules.append({'ID': rule_id(tier, 'expiration'), 'Status': 'Enabled', 'Filter': _tier_filter(prefix, tier),
                          'Expiration': {'Days': expirations[tier]}})
        if normalized[tier]:
            rules.append({'ID': rule_id(tier, 'transition'), 'Status': 'Enabled', 'Filter': _tier_filter(prefix, tier),
                          'Transitions': [{'Days': t['days'], 'StorageClass': t['storage_class']}
                                          for t in normalized[tier]]})
    # Multipart uploads carry no tags yet, and S3 refuses tag filters on this action: filter by prefix.
    if abort_incomplete_multipart_days:
        rules.append({'ID': rule_id('abort-incomplete-multipart'), 'Status': 'Enabled', 'Filter': {'Prefix': prefix},
                      'AbortIncompleteMultipartUpload': {'DaysAfterInitiation': abort_incomplete_multipart_days}})
    # With versioning, the agent's deletes and the expirations above leave noncurrent versions and delete
    # markers: keep the old versions this long (an undo window), then remove them and the markers.
    if versioning and noncurrent_version_expiration_days:
        rules.append({'ID': rule_id('noncurrent-expiration'), 'Status': 'Enabled', 'Filter': {'Prefix': prefix},
                      'NoncurrentVersionExpiration': {'NoncurrentDays': noncurrent_version_expiration_days},
                      'Expiration': {'ExpiredObjectDeleteMarker': True}})
    rules.sort(key=lambda r: r['ID'])
    return rules, warnings


def object_lock_warnings(object_lock, retention, margin_days, expire=True):
    """Locked versions outlive their expiration: say which tiers are billed longer than their retention."""
    if not object_lock or not isinstance(object_lock.get('days'), int):
        return []
    days = object_lock['days']
    limits = expiration_days(retention, margin_days) if expire else expiry_days(retention)
    longer = [tier for tier in TIERS if days > limits[tier]]
    if not longer:
        return []
    return ['object_lock: every version is kept (and billed) at least %d days, longer than the %s tier expires '
            '(%s); deleted versions stay until their lock ends' % (
                days, ' and '.join(longer), ', '.join('%s day %d' % (t, limits[t]) for t in longer))]


# ------------------------------------------------------------------------------------------------
# Comparing and merging with what the bucket holds


def _filter_parts(rule):
    """(prefix, sorted tags, other filter keys) of a rule, whatever form its filter takes."""
    if 'Filter' in rule and rule['Filter'] is not None:
        flt = rule['Filter']
    else:
        flt = {'Prefix': rule.get('Prefix') or ''}
    if 'And' in flt:
        inner = dict(flt['And'])
    else:
        inner = dict(flt)
        if 'Tag' in inner:
            inner['Tags'] = [inner.pop('Tag')]
    prefix = inner.pop('Prefix', '') or ''
    tags = sorted((t['Key'], t['Value']) for t in inner.pop('Tags', None) or [])
    return prefix, tags, inner


def canonical_rule(rule):
    """A rule in one comparable form: S3 answers filters in several equivalent shapes."""
    prefix, tags, other = _filter_parts(rule)
    result = {'ID': rule.get('ID'), 'Status': rule.get('Status'),
              'Filter': {'Prefix': prefix, 'Tags': [{'Key': k, 'Value': v} for k, v in tags]}}
    result['Filter'].update(other)
    expiration = dict((k, v) for k, v in (rule.get('Expiration') or {}).items()
                      if not (k == 'ExpiredObjectDeleteMarker' and v is False))
    if expiration:
        result['Expiration'] = expiration
    if rule.get('Transitions'):
        result['Transitions'] = sorted((dict(t) for t in rule['Transitions']),
                                       key=lambda t: (t.get('Days', -1), str(t.get('Date'))))
    for key in ('NoncurrentVersionExpiration', 'AbortIncompleteMultipartUpload'):
        if rule.get(key):
            result[key] = dict(rule[key])
    if rule.get('NoncurrentVersionTransitions'):
        result['NoncurrentVersionTransitions'] = [dict(t) for t in rule['NoncurrentVersionTransitions']]
    return result


def same_rules(current, desired):
    """True when the collection's rules in ``current`` are exactly ``desired`` (foreign rules ignored)."""
    ours = sorted((canonical_rule(r) for r in current if is_ours(r)), key=lambda r: r['ID'])
    wanted = sorted((canonical_rule(r) for r in desired), key=lambda r: r['ID'])
    return ours == wanted


def merge(current, desired):
    """The bucket's rules after the change: foreign rules untouched and in order, then ours."""
    return [copy.deepcopy(r) for r in current if not is_ours(r)] + [copy.deepcopy(r) for r in desired]


def foreign_rule_warnings(current, prefix, margin_days, retention):
    """Foreign rules that may expire the agent's objects before the agent would (S3 applies every rule)."""
    ours = key_prefix(prefix)
    shortest = min(expiry_days(retention).values())
    warnings = []
    for rule in current:
        if is_ours(rule) or rule.get('Status') != 'Enabled':
            continue
        days = (rule.get('Expiration') or {}).get('Days')
        if not days or days >= shortest + margin_days:
            continue
        theirs, tags, _other = _filter_parts(rule)
        overlaps = theirs.startswith(ours) or ours.startswith(theirs)
        unrelated_tags = [k for k, _v in tags if k not in (TIER_TAG, 'cluster', 'kind')]
        if overlaps and not unrelated_tags:
            warnings.append('lifecycle rule %r (not managed here) expires objects under %r after %d days, which '
                            'may include pg-backup objects the agent still keeps' % (rule.get('ID'), theirs, days))
    return warnings


def jsonable(value):
    """A copy safe for module results: boto3 answers lifecycle dates as datetime objects."""
    if isinstance(value, dict):
        return dict((k, jsonable(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value
