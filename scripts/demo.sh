#!/usr/bin/env bash
# Demo of miometry.pg_backup: the collection's site.yml sets up localhost (agent, configuration,
# monitoring output), backup.yml takes a backup, verify.yml checks it deeply, the agent restores it
# into a scratch database, and health.yml prints the health table.
#
# Without DEMO_PGHOST/DEMO_PGPORT it creates a throw-away PostgreSQL cluster under
# /tmp/pg-backup-demo (port 54329), stopped and left on disk for inspection at the end; the
# wal_archiving role turns on continuous WAL archiving into the demo's repository there.
# With them it uses that server (as DEMO_PGUSER, default postgres), creating or reusing the
# database demo_shop and (re)creating demo_restored; only demo_shop is backed up then. It never
# changes that server's settings: WAL archiving is not configured there (it would point the server's
# archive_command at the demo's temporary directory and might restart it; once that directory is gone,
# archiving would fail and pg_wal would grow).
#
# Backups are encrypted in the recommended public-key mode: the demo makes a throw-away OpenPGP key
# pair in $DEMO_DIR/gnupg (no passphrase, so none on any command line). The host's configuration first
# holds only the public key: it can back up, and cannot read a backup. The secret key is then added for
# the deep verify and the restore, as on a restore host (in a fleet: only there, only while it runs).
#
# Environment: DEMO_DIR (/tmp/pg-backup-demo), DEMO_PORT (54329), DEMO_PGHOST, DEMO_PGPORT,
# DEMO_PGUSER, DEMO_PGBIN (directory of psql/initdb/pg_ctl; default: newest /usr/lib/postgresql/*/bin).
# Run from the repository root after 'make venv' (or just: make demo).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGENT="$REPO_ROOT/.venv/bin/pg-backup"
VENV_PY="$REPO_ROOT/.venv/bin/python"
DEMO_DIR=${DEMO_DIR:-/tmp/pg-backup-demo}
DEMO_PORT=${DEMO_PORT:-54329}
PG_OS_USER=postgres
SOURCE_DB=demo_shop
TARGET_DB=demo_restored

step() {
    if [[ -t 1 ]]; then printf '\n\033[1m==> %s\033[0m\n' "$*"; else printf '\n==> %s\n' "$*"; fi
}
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    PG_OS_USER=$(id -un)
fi

# Run a command as the postgres OS user (directly when we are not root), with a clean environment.
as_pg() {
    local -a envv=(env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$DEMO_DIR" TZ=UTC)
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$PG_OS_USER" -- "${envv[@]}" "$@"
    else
        "${envv[@]}" "$@"
    fi
}

# --- the CLI must be there --------------------------------------------------------------------
[[ -x "$AGENT" ]] || die "$AGENT not found: run 'make venv' first"
if ! as_pg "$AGENT" --help >/dev/null 2>&1; then
    as_pg "$AGENT" --help >&2 || true
    die "pg-backup is installed but does not run as $PG_OS_USER (see above): is agent/src/pg_backup/cli.py complete?"
fi

# --- PostgreSQL binaries ----------------------------------------------------------------------
PGBIN=${DEMO_PGBIN:-}
if [[ -z "$PGBIN" ]]; then
    for dir in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V); do
        PGBIN=$dir
    done
fi
[[ -n "$PGBIN" && -x "$PGBIN/psql" ]] || die "no PostgreSQL binaries found (install postgresql: make deps, or set DEMO_PGBIN)"

OWN_CLUSTER=1
if [[ -n "${DEMO_PGHOST:-}" || -n "${DEMO_PGPORT:-}" ]]; then
    OWN_CLUSTER=0
    PGHOST=${DEMO_PGHOST:-127.0.0.1}
    PGPORT=${DEMO_PGPORT:-5432}
    PGUSER=${DEMO_PGUSER:-postgres}
else
    PGHOST=127.0.0.1
    PGPORT=$DEMO_PORT
    PGUSER=postgres
fi

psql_demo() {  # psql_demo DBNAME SQL  -> unaligned tuples on stdout
    as_pg "$PGBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$1" -c "$2"
}

stop_cluster() {
    if [[ $OWN_CLUSTER -eq 1 && -f "$DEMO_DIR/data/postmaster.pid" ]]; then
        step "Stopping the demo cluster (files stay in $DEMO_DIR)"
        as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/data" -m fast -w stop >/dev/null || true
    fi
}

# --- demo cluster -----------------------------------------------------------------------------
if [[ $OWN_CLUSTER -eq 1 ]]; then
    step "Creating a PostgreSQL cluster in $DEMO_DIR (port $PGPORT, binaries $PGBIN)"
    case "$DEMO_DIR" in
        /tmp/?*) ;;
        *) [[ ! -e "$DEMO_DIR" ]] || die "$DEMO_DIR exists and is outside /tmp: remove it yourself" ;;
    esac
    if [[ -f "$DEMO_DIR/data/postmaster.pid" ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DEMO_DIR"
    mkdir -p "$DEMO_DIR"
    chmod 0700 "$DEMO_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$PG_OS_USER:" "$DEMO_DIR"
    fi
    locale=C
    if locale -a 2>/dev/null | tr '[:upper:]' '[:lower:]' | tr -d '-' | grep -qx 'c.utf8'; then
        locale=C.UTF-8
    fi
    (cd / && as_pg "$PGBIN/initdb" -D "$DEMO_DIR/data" --auth=trust -U postgres --encoding=UTF8 \
        --locale="$locale" --no-sync >/dev/null)
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PGPORT"
        echo "unix_socket_directories = '$DEMO_DIR'"
        echo "fsync = off"
        echo "shared_buffers = 32MB"
    } | as_pg tee -a "$DEMO_DIR/data/postgresql.conf" >/dev/null
    trap stop_cluster EXIT
    if ! (cd / && as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/data" -l "$DEMO_DIR/postgresql.log" -w -t 60 start >/dev/null); then
        tail -n 20 "$DEMO_DIR/postgresql.log" >&2 || true
        die "the demo cluster did not start (is port $PGPORT in use? set DEMO_PORT)"
    fi
else
    step "Using PostgreSQL at $PGHOST:$PGPORT as $PGUSER (binaries $PGBIN)"
    mkdir -p "$DEMO_DIR"
    chmod 0700 "$DEMO_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$PG_OS_USER:" "$DEMO_DIR"
    fi
    psql_demo postgres "SELECT 1" >/dev/null || die "cannot connect to $PGHOST:$PGPORT as $PGUSER"
fi

# --- sample data ------------------------------------------------------------------------------
if [[ $(psql_demo postgres "SELECT count(*) FROM pg_database WHERE datname = '$SOURCE_DB'") == 0 ]]; then
    step "Loading sample data into $SOURCE_DB"
    psql_demo postgres "CREATE DATABASE $SOURCE_DB"
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$SOURCE_DB" <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
INSERT INTO customers SELECT g, 'Customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 500) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, amount numeric(10,2),
                     placed_at timestamptz NOT NULL DEFAULT now(), note text);
INSERT INTO orders (customer_id, amount, placed_at, note)
SELECT 1 + g % 500, round((random() * 1000)::numeric, 2), now() - g * interval '1 minute', md5(g::text)
FROM generate_series(1, 5000) g;
CREATE TABLE "Bestellübersicht 注文" ("Kundé" text, "Anzahl" int);
INSERT INTO "Bestellübersicht 注文" VALUES ('Zoë', 3), ('Jürgen', 5), ('山田', 7);
SQL
else
    step "Reusing existing database $SOURCE_DB"
fi
if [[ $(psql_demo postgres "SELECT count(*) FROM pg_database WHERE datname = '$TARGET_DB'") != 0 ]]; then
    step "Dropping the previous demo's $TARGET_DB"
    psql_demo postgres "DROP DATABASE $TARGET_DB"
fi

# --- the collection sets the host up --------------------------------------------------------------
# The same playbooks operators run against a fleet, here on localhost: site.yml installs the agent
# into its own virtualenv, writes the validated 0600 configuration and the secret file, and sets up
# monitoring output. Schedules are not installed for a throw-away cluster (schedule_jobs: []).
step "Making a throw-away OpenPGP key pair in $DEMO_DIR/gnupg (public-key mode)"
PUBLIC_KEY="$DEMO_DIR/keys/demo-backup.pub.asc"
SECRET_KEY="$DEMO_DIR/keys/restore-operator.sec.asc"
if [[ ! -s "$PUBLIC_KEY" || ! -s "$SECRET_KEY" ]]; then
    as_pg mkdir -p -m 0700 "$DEMO_DIR/gnupg" "$DEMO_DIR/keys"
    # %no-protection: the throw-away secret key has no passphrase, so none is typed or passed anywhere.
    # shellcheck disable=SC2016 # $1..$3 expand in the inner shell
    as_pg sh -c 'umask 077
        printf "%s\n" "%no-protection" "Key-Type: EDDSA" "Key-Curve: ed25519" "Key-Usage: sign" \
            "Subkey-Type: ECDH" "Subkey-Curve: cv25519" "Subkey-Usage: encrypt" \
            "Name-Real: pg-backup demo" "Name-Email: demo@pg-backup.invalid" "Expire-Date: 0" "%commit" |
            gpg --homedir "$1" --batch --quiet --gen-key 2>/dev/null
        gpg --homedir "$1" --batch --armor --export demo@pg-backup.invalid > "$2"
        gpg --homedir "$1" --batch --armor --export-secret-keys demo@pg-backup.invalid > "$3"' \
        sh "$DEMO_DIR/gnupg" "$PUBLIC_KEY" "$SECRET_KEY"
    as_pg chmod 0644 "$PUBLIC_KEY"
fi
[[ -s "$PUBLIC_KEY" && -s "$SECRET_KEY" ]] || die "gpg did not produce the demo key pair in $DEMO_DIR/keys"
printf '    public key  %s (goes to the database host)\n' "$PUBLIC_KEY"
printf '    secret key  %s (mode 0600: the restore operator keeps it)\n' "$SECRET_KEY"

step "Writing a local inventory $DEMO_DIR/inventory.yml (localhost, local repository)"
as_pg mkdir -p "$DEMO_DIR/repo"
DATABASES="[]"
WAL_ARCHIVING=true
if [[ $OWN_CLUSTER -eq 0 ]]; then
    DATABASES="[$SOURCE_DB]"
    WAL_ARCHIVING=false
    printf '    %s:%s is not the demo'"'"'s own server: WAL archiving is not configured there\n' "$PGHOST" "$PGPORT"
    printf '    (pg_backup_wal_archiving: false; its archive_mode and archive_command stay as they are)\n'
fi
COLLECTIONS="$DEMO_DIR/collections"
mkdir -p "$COLLECTIONS/ansible_collections/miometry"
ln -sfn "$REPO_ROOT" "$COLLECTIONS/ansible_collections/miometry/pg_backup"
# galaxy.yml's dependencies (community.postgresql, amazon.aws), pinned, into the venv's collection tree.
bash "$REPO_ROOT/scripts/install-collections.sh" "$REPO_ROOT/.venv"
COLLECTIONS_PATH="$COLLECTIONS:$REPO_ROOT/.venv/collections"
# shellcheck disable=SC2016 # $1 expands in the inner shell
as_pg sh -c 'umask 077 && cat > "$1"' sh "$DEMO_DIR/inventory.yml" <<EOF
all:
  children:
    pg_backup:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: $VENV_PY
          ansible_become_method: ansible.builtin.su
          agent_venv_dir: $DEMO_DIR/opt
          agent_python: /usr/bin/python3
          agent_config_dir: $DEMO_DIR/etc
          agent_state_dir: $DEMO_DIR/state
          agent_log_dir: $DEMO_DIR/log
          schedule_jobs: []
          pg_backup_wal_archiving: $WAL_ARCHIVING
          monitoring_nrpe_enabled: false
          monitoring_textfile_dir: $DEMO_DIR/textfile
          agent_clusters:
            - name: demo
              os_user: $PG_OS_USER
              public_key: "{{ lookup('ansible.builtin.file', '$PUBLIC_KEY') }}"
              config:
                postgres: {host: "$PGHOST", port: $PGPORT, user: "$PGUSER", bin_dir: "$PGBIN"}
                repository: {type: local, path: $DEMO_DIR/repo}
                # The secret key only where restores run: -e demo_restore_host=true adds it.
                encryption:
                  mode: public-key
                  private_key_files: "{{ ['$SECRET_KEY'] if demo_restore_host | default(false) | bool else [] }}"
                backup: {databases: $DATABASES}
EOF
playbook() {
    local name=$1
    shift
    step "ansible-playbook miometry.pg_backup.$name $*"
    ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS_PATH" ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=false \
        "$REPO_ROOT/.venv/bin/ansible-playbook" -i "$DEMO_DIR/inventory.yml" "$REPO_ROOT/playbooks/$name.yml" "$@"
}
playbook site
AGENT="$DEMO_DIR/opt/bin/pg-backup"
pgb() { as_pg "$AGENT" --config "$DEMO_DIR/etc/demo.yml" "$@"; }

# --- backup, list, verify, restore, health ------------------------------------------------------
playbook backup -e tier=daily
BACKUP_ID=$(pgb --json list | "$VENV_PY" -c 'import json, sys; print(json.load(sys.stdin)["backups"][-1]["backup_id"])')

step "pg-backup list"
pgb list

step "The host holds only the public key: pg-backup verify --deep $BACKUP_ID cannot decrypt"
rc=0
pgb verify --deep "$BACKUP_ID" >"$DEMO_DIR/verify-without-key.log" 2>&1 || rc=$?
sed 's/^/    /' "$DEMO_DIR/verify-without-key.log" | tail -n 3
[[ $rc -eq 8 ]] || die "verify --deep without the secret key exited $rc, expected 8 (encryption key missing)"
printf '    exit %s (encryption key missing): a stolen database host reads no backup\n' "$rc"

step "Adding the restore operator's secret key (private_key_files) for the deep verify and the restore"
playbook site -e demo_restore_host=true --tags agent_configure
playbook verify -e verify_deep=true

step "pg-backup restore $BACKUP_ID --database $SOURCE_DB --target-database $TARGET_DB"
pgb restore "$BACKUP_ID" --database "$SOURCE_DB" --target-database "$TARGET_DB"

playbook health

# --- compare ----------------------------------------------------------------------------------
step "Comparing row counts: $SOURCE_DB vs $TARGET_DB"
count_rows() {
    local db=$1 t
    psql_demo "$db" "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                     WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1" |
    while IFS= read -r t; do
        printf '%s\t%s\n' "$t" "$(psql_demo "$db" "SELECT count(*) FROM $t")"
    done
}
source_counts=$(count_rows "$SOURCE_DB")
target_counts=$(count_rows "$TARGET_DB")
printf '%s\n' "$source_counts" | sed 's/^/    /'
if [[ -z "$source_counts" || "$source_counts" != "$target_counts" ]]; then
    echo "restored counts:" >&2
    printf '%s\n' "$target_counts" | sed 's/^/    /' >&2
    die "row counts differ between $SOURCE_DB and $TARGET_DB"
fi
step "Demo complete: every table of $SOURCE_DB came back with the same row count"
