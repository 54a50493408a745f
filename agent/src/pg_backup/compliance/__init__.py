"""The compliance report (issue 11, docs/compliance.md): one document an auditor can read per cluster.

- :mod:`.period`: the reporting period (``--period 2026-Q4``, ``--since``/``--until``);
- :mod:`.expiry`: when each backup expires under the current retention, by the retention planner itself;
- :mod:`.collect`: the report document (JSON, ``schema_version``) from the repository alone;
- :mod:`.markdown` and :mod:`.pdf`: the same document for people (PDF: the charts extra, matplotlib).
"""
