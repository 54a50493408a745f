"""A base backup whose archives are stored as parts (``physical.archive_part_mib``; docs/pitr.md, "Parts"):
a relation file larger than a part spread over several, a tablespace split too, ``verify --deep``, a PITR
with exact content, the stock-tool recipe of docs/pitr.md extracting the same files, and a tampered
middle part refused before anything is written."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import free_port, make_pg_dir
from pgb_pitr_support import enable_archiving, remove_tree, scratch_dir, sql_on, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration

BIG = "SELECT count(*), md5(string_agg(pad, ',' ORDER BY id)) FROM big"


def _recipe() -> str:
    """The extraction lines of docs/pitr.md's stock-tool recipe, as an operator would paste them."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "pitr.md").read_text()
    block = text.split("## Disaster recipe with stock tools", 1)[1].split("```bash\n", 1)[1]
    return block.split("\nif [ -f", 1)[0]


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_archives_stored_as_parts(make_cluster, workdir, write_config, run_agent, tmp_path):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    ts_dir = str(make_pg_dir(cluster.dir / "ts_parts"))
    cfg = write_config(workdir, "parts", cluster=cluster, physical={"checkpoint": "fast", "archive_part_mib": 1},
                       verify={"scratch_dir": str(make_pg_dir(workdir / "scratch"))})
    enable_archiving(cluster, cfg)
    cluster.psql("CREATE DATABASE app")
    cluster.psql(f"CREATE TABLESPACE fast LOCATION '{ts_dir}'")
    cluster.psql("CREATE TABLE big (id int PRIMARY KEY, pad text);"
                 "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g;"
                 "CREATE TABLE fastt (id int) TABLESPACE fast; INSERT INTO fastt SELECT generate_series(1, 100000)",
                 dbname="app")
    rel = cluster.psql("SELECT pg_relation_filepath('big')", dbname="app")
    assert (cluster.datadir / rel).stat().st_size > 5 << 20
    backup_id = run_agent(cfg, "backup", "--physical").data["backup_id"]
    bdir = workdir / "repo" / "parts" / "backups" / backup_id
    m = json.loads((bdir / "manifest.json").read_text())
    assert m["schema_version"] == 3
    base = m["parts"]["base.tar.zst.gpg"]
    assert [p["object"] for p in base][:2] == ["base.tar.zst.gpg", "base.tar.part-0002.zst.gpg"]
    assert {o["name"] for o in m["objects"]} >= {p["object"] for p in base}
    assert sum(1 for p in base if p["resume"] and p["resume"]["path"] == rel) >= 3, "the relation spans parts"
    [ts] = m["tablespaces"]
    assert len(m["parts"][ts["object"]]) > 1
    cluster.psql("INSERT INTO big SELECT g, 'after' FROM generate_series(60001, 60100) g", dbname="app")
    want = cluster.psql(BIG.replace("\n", " "), dbname="app")
    switch_and_wait_archived(cluster)

    deep = run_agent(cfg, "verify", backup_id, "--deep").data["backups"][0]
    assert deep["ok"] and deep["pg_verifybackup"]["ok"] is True

    scratch = scratch_dir()
    try:
        port = free_port()
        data_dir = os.path.join(scratch, "data")
        run_agent(cfg, "pitr", "--latest", "--data-dir", data_dir, "--port", str(port),
                  "--tablespace-map", f"{ts_dir}={os.path.join(scratch, 'ts')}", timeout=300)
        assert "|".join(map(str, sql_on(port, BIG, "app"))) == want.replace(" ", "")
        assert sql_on(port, "SELECT count(*) FROM fastt", "app")[0] == 100000
        stop(data_dir)

        # The stock-tool recipe extracts the same files from the same parts
        run_agent(cfg, "pitr", "--latest", "--no-start", "--data-dir", os.path.join(scratch, "agent"),
                  "--port", str(free_port()), "--tablespace-map", f"{ts_dir}={os.path.join(scratch, 'ts2')}")
        gnupg = tmp_path / "gnupg"
        gnupg.mkdir(mode=0o700)
        gpg = f"gpg --batch --quiet --pinentry-mode loopback --passphrase-file {workdir / 'passphrase'} --decrypt"
        script = (_recipe().replace("gpg --decrypt", gpg).replace('"$loc"', '"$D.ts/$oid"')
                  .replace("D=/srv/recovered", f"D={scratch}/recipe"))
        script = f"B={backup_id}; R={workdir / 'repo' / 'parts'}\n" + script.split("\n", 1)[1]
        done = subprocess.run(["bash", "-ec", "set -o pipefail\n" + script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=dict(os.environ, GNUPGHOME=str(gnupg)))
        assert done.returncode == 0, done.stdout + done.stderr
        recipe, agent = Path(scratch) / "recipe", Path(scratch) / "agent"
        assert _files(recipe / "base") == _files(agent / "base") and rel in {f"base/{k}" for k in _files(recipe / "base")}
        assert _files(Path(f"{recipe}.ts") / str(ts["oid"])) == _files(Path(scratch) / "ts2")

        # A tampered middle part: refused (exit 4) before anything is written to the target
        middle = bdir / base[len(base) // 2]["object"]
        raw = bytearray(middle.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        middle.write_bytes(bytes(raw))
        res = run_agent(cfg, "verify", backup_id, check=False)
        assert res.rc == 4 and middle.name in res.stderr, res.describe()
        target = os.path.join(scratch, "tampered")
        res = run_agent(cfg, "pitr", "--latest", "--data-dir", target, "--port", str(free_port()), check=False,
                        json=False)
        assert res.rc == 4 and middle.name in res.stderr, res.describe()
        assert not os.path.exists(os.path.join(target, "PG_VERSION"))
    finally:
        stop(os.path.join(scratch, "data"))
        remove_tree(scratch)
