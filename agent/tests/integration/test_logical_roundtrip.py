"""Logical backup round trips against real PostgreSQL clusters and a real S3 endpoint.

Awkward content on purpose: bytea, large objects, identifiers that need quoting (unicode, quotes,
spaces, upper case), an extension, roles with grants, two databases. The backup is restored into a
*different* cluster with its globals, and every table's content checksum and every role and grant
are compared with the source.
"""
from __future__ import annotations

import pytest

from conftest import SUPPORTED_VERSIONS

pytestmark = pytest.mark.integration

AWKWARD_SQL = r"""
CREATE ROLE app_owner LOGIN;
CREATE ROLE "Ünïcode Reader" NOLOGIN;
CREATE ROLE "we""ird" NOLOGIN;
GRANT "Ünïcode Reader" TO app_owner;
"""

AWKWARD_DB = r"""
CREATE SCHEMA "Sché ma";
CREATE TABLE public.plain (id int PRIMARY KEY, payload bytea, note text);
INSERT INTO public.plain SELECT g, decode(md5(random()::text) || md5(g::text), 'hex'), repeat('ü', g % 17) FROM generate_series(1, 5000) g;
CREATE TABLE "Sché ma"."Tåble ""quoted"" Name" ("Côl" text, "UPPER" int);
INSERT INTO "Sché ma"."Tåble ""quoted"" Name" VALUES ('日本語', 1), (E'tab\there', 2), (NULL, 3);
CREATE TABLE public.docs (id serial PRIMARY KEY, blob oid);
INSERT INTO public.docs (blob) SELECT lo_from_bytea(0, (SELECT decode(string_agg(md5(random()::text || i::text), ''), 'hex') FROM generate_series(1, 6250) s(i) WHERE i > g - g)) FROM generate_series(1, 3) g;
ALTER TABLE public.plain OWNER TO app_owner;
GRANT USAGE ON SCHEMA "Sché ma" TO "Ünïcode Reader";
GRANT SELECT ON ALL TABLES IN SCHEMA "Sché ma" TO "Ünïcode Reader";
GRANT SELECT ON public.plain TO "we""ird";
"""



def table_fingerprint(cluster, dbname: str) -> dict:
    """Content checksum per table (order-independent) plus large objects, computed by the server."""
    tables = cluster.psql("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                          "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                          dbname=dbname).split("\n")
    result = {}
    for t in filter(None, tables):
        result[t] = cluster.psql(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
                                 f"FROM {t} x", dbname=dbname)
    result["<large objects>"] = cluster.psql(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(lo_get(oid)), '|' ORDER BY md5(lo_get(oid)))), '') "
        "FROM pg_largeobject_metadata", dbname=dbname)
    return result


def roles_and_grants(cluster, dbname: str) -> dict:
    return {
        "roles": cluster.psql("SELECT string_agg(rolname || ':' || rolcanlogin, ',' ORDER BY rolname COLLATE \"C\") FROM pg_roles "
                              "WHERE rolname !~ '^pg_' AND rolname <> 'postgres'"),
        "members": cluster.psql("SELECT string_agg(r.rolname || '>' || m.rolname, ',' ORDER BY r.rolname || '>' || m.rolname COLLATE \"C\") FROM pg_auth_members a "
                                "JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
                                "WHERE r.rolname !~ '^pg_'"),
        "grants": cluster.psql("SELECT string_agg(grantee || ':' || table_schema || '.' || table_name || ':' || "
                               "privilege_type, ',' ORDER BY grantee || table_schema || table_name || privilege_type COLLATE \"C\") "
                               "FROM information_schema.role_table_grants "
                               "WHERE grantee <> 'postgres' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
                               dbname=dbname),
        "owners": cluster.psql("SELECT string_agg(tablename || ':' || tableowner, ',' ORDER BY tablename COLLATE \"C\") FROM pg_tables "
                               "WHERE schemaname = 'public'", dbname=dbname),
    }


def _extension(cluster) -> str:
    """An extension this build has (Debian's contrib, or pgvector in the pgserver wheel)."""
    available = cluster.psql("SELECT string_agg(name, ',') FROM pg_available_extensions").split(",")
    for name in ("pgcrypto", "hstore", "citext", "vector"):
        if name in available:
            return name
    pytest.fail(f"no test extension available in PostgreSQL {cluster.version}")


def _populate(cluster) -> str:
    extension = _extension(cluster)
    cluster.psql(AWKWARD_SQL)
    cluster.psql('CREATE DATABASE "Ünïcode ""db"" Name"')
    cluster.psql("CREATE DATABASE app")
    cluster.psql(AWKWARD_DB + f"CREATE EXTENSION {extension};", dbname="app")
    cluster.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)", dbname='Ünïcode "db" Name')
    return extension


@pytest.mark.parametrize("repo_kind", ["local", "s3"])
def test_round_trip_into_a_new_cluster_preserves_content_roles_and_grants(
        repo_kind, pg_version, make_cluster, s3_server, workdir, write_config, run_agent):
    if repo_kind == "local" and pg_version != SUPPORTED_VERSIONS[0]:
        pytest.skip("the repository kind does not depend on the major: local storage runs on the oldest major, "
                    "S3 on every major (CI time)")
    source = make_cluster(version=pg_version)
    extension = _populate(source)
    target = make_cluster(version=pg_version)
    s3 = s3_server if repo_kind == "s3" else None
    src_cfg = write_config(workdir, "prod", cluster=source, s3=s3, backup={"row_counts": True})
    dst_cfg = write_config(workdir, "prod", cluster=target, s3=s3, config_name="target.yml")

    backup = run_agent(src_cfg, "backup", "--tier", "daily").data
    backup_id = backup["backup_id"]
    assert sorted(backup["backup"]["databases"]) == ['app', 'postgres', 'Ünïcode "db" Name']

    listed = run_agent(dst_cfg, "list").data["backups"]
    assert [b["backup_id"] for b in listed] == [backup_id]
    assert listed[0]["key_fingerprint"].startswith("scrypt:")

    shown = run_agent(dst_cfg, "show", backup_id).data["manifest"]
    app = [d for d in shown["databases"] if d["name"] == "app"][0]
    assert app["row_counts"]["public.plain"] == 5000
    assert app["row_counts"]['"Sché ma"."Tåble ""quoted"" Name"'] == 3
    assert shown["system_identifier"] == source.psql("SELECT system_identifier FROM pg_control_system()")
    assert shown["server_version_num"] // 10000 == int(pg_version)

    run_agent(dst_cfg, "verify", backup_id, "--deep")
    run_agent(dst_cfg, "restore", backup_id, "--database", "app", "--with-globals")
    run_agent(dst_cfg, "restore", backup_id, "--database", 'Ünïcode "db" Name', "--jobs", "2")

    assert table_fingerprint(target, "app") == table_fingerprint(source, "app")
    assert roles_and_grants(target, "app") == roles_and_grants(source, "app")
    assert table_fingerprint(target, 'Ünïcode "db" Name') == table_fingerprint(source, 'Ünïcode "db" Name')
    assert target.psql(f"SELECT count(*) FROM pg_extension WHERE extname = '{extension}'", dbname="app") == "1"


def test_restore_never_replaces_without_the_flag_and_replaces_safely_with_it(
        pg_version, make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster(version=pg_version)
    cluster.psql("CREATE DATABASE shop")
    cluster.psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 10)", dbname="shop")
    cfg = write_config(workdir, "main", cluster=cluster)
    backup_id = run_agent(cfg, "backup", "--tier", "daily", "--database", "shop").data["backup_id"]
    cluster.psql("INSERT INTO orders SELECT generate_series(11, 20)", dbname="shop")

    refused = run_agent(cfg, "restore", backup_id, "--database", "shop", check=False)
    assert refused.rc == 9
    assert "already exists" in refused.stderr and "--replace" in refused.stderr
    assert cluster.psql("SELECT count(*) FROM orders", dbname="shop") == "20"

    run_agent(cfg, "restore", backup_id, "--database", "shop", "--replace")
    assert cluster.psql("SELECT count(*) FROM orders", dbname="shop") == "10"
    leftovers = cluster.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'shop_pgb_%'")
    assert leftovers == "0"


def test_table_and_schema_selective_restore(pg_version, make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster(version=pg_version)
    cluster.psql("CREATE DATABASE crm")
    cluster.psql("CREATE TABLE a (x int); CREATE TABLE b (y int); INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)",
                 dbname="crm")
    cfg = write_config(workdir, "main", cluster=cluster)
    backup_id = run_agent(cfg, "backup", "--tier", "weekly", "--database", "crm").data["backup_id"]
    run_agent(cfg, "restore", backup_id, "--database", "crm", "--target-database", "crm_a", "--table", "a")
    assert cluster.psql("SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'",
                        dbname="crm_a") == "a"


def test_monthly_backup_in_glacier_is_retrieved_by_restore(pg15, s3_server, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS archive; CREATE DATABASE archive")
    pg15.psql("CREATE TABLE ledger AS SELECT generate_series(1, 500) AS entry", dbname="archive")
    cfg = write_config(workdir, "cold", cluster=pg15, s3=s3_server,
                       s3_overrides={"storage_class": {"monthly": "DEEP_ARCHIVE"}, "restore_poll_seconds": 1})
    backup_id = run_agent(cfg, "backup", "--tier", "monthly", "--database", "archive").data["backup_id"]
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket)["Contents"] if "/backups/" in o["Key"]]
    classes = {k.rsplit("/", 1)[-1]: client.head_object(Bucket=s3_server.bucket, Key=k).get("StorageClass") for k in keys}
    assert classes.pop("manifest.json") is None  # the catalog stays readable without retrieval
    assert set(classes.values()) == {"DEEP_ARCHIVE"}
    restored = run_agent(cfg, "restore", backup_id, "--database", "archive", "--target-database", "archive_2019")
    assert "archived objects: 1/1 readable" in restored.stderr  # only the dump it needs
    assert pg15.psql("SELECT count(*) FROM ledger", dbname="archive_2019") == "500"
