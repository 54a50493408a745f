"""The erasure register (GDPR Art. 17): erasures recorded once in production, re-applied to every
copy of old data before it is handed over.

- :mod:`.statements`: the checks a statement passes before it runs (PostgreSQL's parser, pglast);
- :mod:`.live`: ``erasure add``: run in production in one transaction, record once committed;
- :mod:`.register`: the encrypted, write-once records under ``<cluster>/erasures/``;
- :mod:`.replay`: re-applying the register to restored data (restore, pitr, verify, drill).
"""
