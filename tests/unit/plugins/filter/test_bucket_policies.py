# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The bucket_policies filter: the documents of module_utils/bucket_policy.py, bad input as a filter error."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.miometry.pg_backup.plugins.filter.bucket_policies import FilterModule, bucket_policies


def test_the_filter_is_registered_under_its_name():
    assert FilterModule().filters() == {'bucket_policies': bucket_policies}


def test_filter_returns_one_item_per_document():
    result = bucket_policies('acme-pg', prefix='prod', clusters=['main', {'name': 'billing'}])
    assert [d['name'] for d in result] == ['writer-billing', 'writer-main', 'pruner-billing', 'pruner-main',
                                           'restorer']
    assert result[0]['duty'] == 'writer' and result[0]['cluster'] == 'billing'
    assert result[-1]['cluster'] is None
    assert 'arn:aws:s3:::acme-pg/prod/billing/*' in result[0]['document']['Statement'][2]['Resource']


def test_bad_input_is_a_filter_error_naming_what_to_set():
    with pytest.raises(AnsibleFilterError, match='bucket_policies: no cluster stores in bucket acme-pg.*bucket_policy_clusters'):
        bucket_policies('acme-pg', clusters=[])
