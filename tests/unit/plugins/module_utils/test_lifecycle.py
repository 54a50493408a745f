# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Lifecycle rules derived from the agent's retention: the specification of backup_lifecycle's rules."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime

import pytest

from ansible_collections.miometry.pg_backup.plugins.module_utils import lifecycle


def by_id(rules):
    return dict((r['ID'], r) for r in rules)


def test_expiry_days_uses_the_agents_arithmetic():
    # agent/src/pg_backup/retention.py expiry_days: daily days, weeks * 7, months * 31
    assert lifecycle.expiry_days({}) == {'daily': 30, 'weekly': 84, 'monthly': 84 * 31}
    assert lifecycle.expiry_days({'daily_days': 7, 'weekly_weeks': 5, 'monthly_months': 12}) == \
        {'daily': 7, 'weekly': 35, 'monthly': 372}


def test_default_rules_expire_each_tier_after_retention_plus_margin_filtered_by_tier_tag():
    rules, warnings = lifecycle.derive()
    assert warnings == []
    rules = by_id(rules)
    assert sorted(rules) == ['pg-backup-abort-incomplete-multipart', 'pg-backup-daily-expiration',
                             'pg-backup-monthly-expiration', 'pg-backup-weekly-expiration']
    assert rules['pg-backup-daily-expiration'] == {
        'ID': 'pg-backup-daily-expiration', 'Status': 'Enabled',
        'Filter': {'Tag': {'Key': 'tier', 'Value': 'daily'}}, 'Expiration': {'Days': 60}}
    assert rules['pg-backup-weekly-expiration']['Expiration'] == {'Days': 84 + 30}
    assert rules['pg-backup-monthly-expiration']['Expiration'] == {'Days': 84 * 31 + 30}
    assert rules['pg-backup-abort-incomplete-multipart']['AbortIncompleteMultipartUpload'] == {'DaysAfterInitiation': 7}


def test_margin_is_added_to_every_tier():
    rules = by_id(lifecycle.derive(retention={'daily_days': 10}, margin_days=5)[0])
    assert rules['pg-backup-daily-expiration']['Expiration']['Days'] == 15
    assert rules['pg-backup-weekly-expiration']['Expiration']['Days'] == 84 + 5


def test_prefix_scopes_every_rule():
    rules = by_id(lifecycle.derive(prefix='/prod/', versioning=True)[0])
    assert rules['pg-backup-daily-expiration']['Filter'] == {
        'And': {'Prefix': 'prod/', 'Tags': [{'Key': 'tier', 'Value': 'daily'}]}}
    # multipart uploads carry no tags yet (and S3 refuses tag filters there): prefix only
    assert rules['pg-backup-abort-incomplete-multipart']['Filter'] == {'Prefix': 'prod/'}
    assert rules['pg-backup-noncurrent-expiration']['Filter'] == {'Prefix': 'prod/'}


def test_noncurrent_versions_expire_only_with_versioning():
    assert 'pg-backup-noncurrent-expiration' not in by_id(lifecycle.derive(versioning=False)[0])
    rule = by_id(lifecycle.derive(versioning=True, noncurrent_version_expiration_days=14)[0])[
        'pg-backup-noncurrent-expiration']
    assert rule['NoncurrentVersionExpiration'] == {'NoncurrentDays': 14}
    assert rule['Expiration'] == {'ExpiredObjectDeleteMarker': True}


def test_expire_false_writes_no_expiration_rule_at_all():
    rules = lifecycle.derive(expire=False, abort_incomplete_multipart_days=0)[0]
    assert rules == []


def test_transitions_become_a_rule_per_tier():
    rules, warnings = lifecycle.derive(transitions={'monthly': [{'days': 30, 'storage_class': 'GLACIER_IR'},
                                                                {'days': 180, 'storage_class': 'DEEP_ARCHIVE'}]})
    rule = by_id(rules)['pg-backup-monthly-transition']
    assert rule['Filter'] == {'Tag': {'Key': 'tier', 'Value': 'monthly'}}
    assert rule['Transitions'] == [{'Days': 30, 'StorageClass': 'GLACIER_IR'},
                                   {'Days': 180, 'StorageClass': 'DEEP_ARCHIVE'}]
    assert warnings == []


def test_transition_on_or_after_expiration_fails():
    with pytest.raises(lifecycle.LifecycleError) as caught:
        lifecycle.derive(transitions={'daily': [{'days': 60, 'storage_class': 'GLACIER'}]})
    assert 'not before the daily tier\'s expiration on day 60' in str(caught.value)


def test_transition_after_expiration_is_fine_without_expiration_rules():
    rules, warnings = lifecycle.derive(expire=False, transitions={'daily': [{'days': 60, 'storage_class': 'GLACIER'}]})
    assert 'pg-backup-daily-transition' in by_id(rules)
    assert any('after the agent prunes daily backups (day 30)' in w for w in warnings)


def test_short_stay_in_a_class_with_minimum_duration_warns():
    warnings = lifecycle.derive(transitions={'daily': [{'days': 10, 'storage_class': 'GLACIER'}]})[1]
    assert len(warnings) == 1
    assert 'GLACIER on day 10 are pruned by the agent' in warnings[0]
    assert 'billed for at least 90 days' in warnings[0]


def test_next_transition_before_minimum_duration_warns():
    transitions = {'monthly': [{'days': 30, 'storage_class': 'STANDARD_IA'}, {'days': 45, 'storage_class': 'GLACIER'}]}
    warnings = lifecycle.derive(transitions=transitions)[1]
    assert any('STANDARD_IA on day 30 are moved on to GLACIER on day 45' in w for w in warnings)


@pytest.mark.parametrize('transitions, message', [
    ({'daily': [{'days': 10, 'storage_class': 'STANDARD_IA'}]}, 'at least 30 days old'),
    ({'daily': [{'days': 10, 'storage_class': 'STANDARD'}]}, 'storage_class must be one of'),
    ({'monthly': [{'days': 90, 'storage_class': 'GLACIER'}, {'days': 40, 'storage_class': 'DEEP_ARCHIVE'}]},
     'days must increase'),
    ({'monthly': [{'days': 30, 'storage_class': 'GLACIER'}, {'days': 400, 'storage_class': 'STANDARD_IA'}]},
     'cannot move objects from GLACIER to STANDARD_IA'),
    ({'hourly': []}, 'unknown tier'),
])
def test_transitions_s3_would_refuse_fail(transitions, message):
    with pytest.raises(lifecycle.LifecycleError) as caught:
        lifecycle.derive(transitions=transitions)
    assert message in str(caught.value)


def test_invalid_retention_fails_listing_every_problem():
    with pytest.raises(lifecycle.LifecycleError) as caught:
        lifecycle.derive(retention={'daily_days': 0, 'weekly_weeks': 'x'}, margin_days=-1)
    assert len(caught.value.problems) == 3


def test_foreign_rules_are_preserved_in_order_and_ours_replaced():
    foreign = [{'ID': 'logs-expire', 'Status': 'Enabled', 'Filter': {'Prefix': 'logs/'}, 'Expiration': {'Days': 3}},
               {'ID': 'archive', 'Status': 'Enabled', 'Prefix': 'old/',
                'Expiration': {'Date': datetime.datetime(2030, 1, 1)}}]
    stale = {'ID': 'pg-backup-daily-expiration', 'Status': 'Enabled', 'Filter': {'Tag': {'Key': 'tier', 'Value': 'daily'}},
             'Expiration': {'Days': 5}}
    ours = lifecycle.derive()[0]
    merged = lifecycle.merge([foreign[0], stale, foreign[1]], ours)
    assert merged[:2] == foreign
    assert merged[2:] == ours
    assert not lifecycle.same_rules([foreign[0], stale, foreign[1]], ours)
    assert lifecycle.same_rules(merged, ours)


def test_rules_compare_equal_whatever_filter_shape_s3_answers():
    ours = lifecycle.derive()[0]
    answered = []
    for rule in ours:
        rule = dict(rule)
        if 'Tag' in rule['Filter']:
            rule['Filter'] = {'And': {'Prefix': '', 'Tags': [rule['Filter']['Tag']]}}
        answered.append(rule)
    assert lifecycle.same_rules(list(reversed(answered)), ours)


def test_a_stale_rule_of_ours_that_is_no_longer_wanted_counts_as_a_change():
    ours = lifecycle.derive(expire=False, abort_incomplete_multipart_days=0)[0]
    current = [{'ID': 'pg-backup-daily-expiration', 'Status': 'Enabled',
                'Filter': {'Tag': {'Key': 'tier', 'Value': 'daily'}}, 'Expiration': {'Days': 60}}]
    assert not lifecycle.same_rules(current, ours)
    assert lifecycle.merge(current, ours) == []


def test_foreign_rule_that_expires_our_objects_early_warns():
    current = [{'ID': 'everything-7d', 'Status': 'Enabled', 'Filter': {'Prefix': ''}, 'Expiration': {'Days': 7}},
               {'ID': 'logs', 'Status': 'Enabled', 'Filter': {'Prefix': 'logs/'}, 'Expiration': {'Days': 7}}]
    warnings = lifecycle.foreign_rule_warnings(current, 'prod', 30, {})
    assert len(warnings) == 1 and "'everything-7d'" in warnings[0]


def test_object_lock_longer_than_an_expiration_warns():
    assert lifecycle.object_lock_warnings({'mode': 'GOVERNANCE', 'days': 30}, {}, 30) == []
    warnings = lifecycle.object_lock_warnings({'mode': 'COMPLIANCE', 'days': 100}, {}, 30)
    assert len(warnings) == 1 and 'daily' in warnings[0] and 'weekly' not in warnings[0]


def test_jsonable_turns_dates_into_strings():
    assert lifecycle.jsonable({'a': [datetime.datetime(2030, 1, 1)]}) == {'a': ['2030-01-01T00:00:00']}
