# -*- coding: utf-8 -*-
# Copyright: (c) 2026, miometry platform engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # What each attribute means, for every module of the collection; a module states its own
    # support (and details), or takes them from READ_ONLY.
    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check mode and report whether it would change something, without changing it.
  diff_mode:
    description: Returns what changed (or would change, in check mode) as a before and after diff.
'''

    # Modules that only read (the agent's list, verify and health): the same result in check mode.
    READ_ONLY = r'''
options: {}
attributes:
  check_mode:
    support: full
    details: The module only reads; in check mode it runs the agent and returns the same result.
  diff_mode:
    support: none
    details: Nothing changes, so there is no diff.
'''
