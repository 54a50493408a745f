from __future__ import annotations

import os

from pg_backup.errors import EXIT_CODES


def test_readme_documents_every_exit_code():
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in text, f"README lacks exit code {code}"


def test_exit_codes_are_distinct_for_the_required_failures():
    from pg_backup import errors

    codes = {errors.UsageError.exit_code, errors.LockBusyError.exit_code, errors.IntegrityError.exit_code,
             errors.StorageError.exit_code}
    assert len(codes) == 4
    assert all(0 < c < 128 for c in codes)


def test_results_that_fail_without_raising_are_typed_by_their_exit_code():
    from pg_backup.errors import error_type_for

    assert error_type_for(4) == "IntegrityError"
    assert error_type_for(7) == "NotFoundError"
    assert error_type_for(6) == "PostgresError"
    assert error_type_for(1) == "PgBackupError"
