#!/usr/bin/env bash
# The servers the tests expect on this machine, on 127.0.0.1 only:
#   MariaDB    127.0.0.1:3306  root with an empty password, database `test`
#   PostgreSQL 127.0.0.1:5432  user postgres, trust auth on loopback, database `test`
#   Redis      127.0.0.1:6379  no persistence (Zaqar's own test_pools_new hard-codes it)
# and installs Debian's chromium (no server: harness/browser.py runs it headless
# for the HTML pages the project renders) and prometheus (no server either:
# tests start their own on loopback, scraping the collector).
# (harness/servers.py holds the URLs the tests use; without these servers the
# tests that need them skip, or fail when $CI is set.)
#
# Installs what is missing from Debian's packages (needs root and apt-get),
# starts what is not running, and says what it did. Idempotent: on a machine
# where all three answer it changes nothing and returns in about a second.
#   tools/services.sh          install + start
#   tools/services.sh status   what answers, nothing changed
#   tools/services.sh stop     stop the three (by their own tools and pid files)
set -euo pipefail

HOST=127.0.0.1
action=${1:-start}
said=0
say() { echo "services: $*"; said=1; }

listening() {  # port: true when something accepts a TCP connection there
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

wait_port() {  # name port: up to 60 s, for a server that was just started
    local i
    for i in $(seq 1 120); do
        listening "$2" && return 0
        sleep 0.5
    done
    echo "services: $1 did not start listening on $HOST:$2 in 60 s" >&2
    return 1
}

have_package() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

install_missing() {
    local missing=() p
    for p in "$@"; do have_package "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "services: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    say "installing ${missing[*]} from Debian's packages"
    # The machine's policy-rc.d keeps apt from starting them: this script
    # starts them below, configured for loopback.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# --- PostgreSQL -------------------------------------------------------------
pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

postgres_start() {
    install_missing postgresql
    local ver conf hba
    ver=$(pg_version)
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$ver main"; then
        say "creating PostgreSQL $ver cluster main"
        pg_createcluster "$ver" main >/dev/null
    fi
    conf=/etc/postgresql/$ver/main/conf.d/zaqar-otel-tests.conf
    hba=/etc/postgresql/$ver/main/pg_hba.conf
    if [ ! -f "$conf" ]; then
        say "PostgreSQL: listen on $HOST only ($conf)"
        echo "listen_addresses = '$HOST'" > "$conf"
    fi
    if ! grep -q "^host all all $HOST/32 trust" "$hba"; then
        say "PostgreSQL: trust auth for $HOST ($hba)"
        # First match wins in pg_hba.conf: put ours first.
        sed -i "1i host all all $HOST/32 trust" "$hba"
        pg_ctlcluster "$ver" main status >/dev/null 2>&1 && pg_ctlcluster "$ver" main reload
    fi
    if ! listening 5432; then
        say "starting PostgreSQL $ver on $HOST:5432"
        pg_ctlcluster "$ver" main start
        wait_port PostgreSQL 5432
    fi
    if ! psql -h "$HOST" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1; then
        say "PostgreSQL: creating database test"
        psql -h "$HOST" -U postgres -qc "CREATE DATABASE test"
    fi
}

postgres_stop() {
    local ver
    ver=$(pg_version)
    [ -n "$ver" ] && pg_ctlcluster "$ver" main stop 2>/dev/null && say "stopped PostgreSQL" || true
}

# --- MariaDB ----------------------------------------------------------------
MARIADB_CONF=/etc/mysql/mariadb.conf.d/99-zaqar-otel-tests.cnf

mariadb_start() {
    install_missing mariadb-server
    if [ ! -f "$MARIADB_CONF" ]; then
        say "MariaDB: listen on $HOST only ($MARIADB_CONF)"
        printf '[mysqld]\nbind-address = %s\nskip-name-resolve\n' "$HOST" > "$MARIADB_CONF"
    fi
    if ! listening 3306; then
        say "starting MariaDB on $HOST:3306"
        install -d -o mysql -g mysql /run/mysqld
        # mysqld_safe restarts the server if it dies; its own log, not ours.
        (setsid mysqld_safe >/dev/null 2>&1 &)
        wait_port MariaDB 3306
    fi
    # root over TCP with an empty password (the tests' URL); the socket keeps
    # Debian's unix_socket auth for root, which this script uses.
    if ! mariadb -h "$HOST" -u root -e "SELECT 1" >/dev/null 2>&1 \
         || ! mariadb -h "$HOST" -u root -e "USE test" >/dev/null 2>&1; then
        say "MariaDB: root@$HOST without a password, database test"
        mariadb -u root <<SQL
CREATE USER IF NOT EXISTS 'root'@'$HOST' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'$HOST' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS test;
FLUSH PRIVILEGES;
SQL
    fi
}

mariadb_stop() {
    if listening 3306; then
        mariadb-admin -u root shutdown 2>/dev/null && say "stopped MariaDB" || true
    fi
}

# --- Redis ------------------------------------------------------------------
REDIS_DIR=/var/lib/zaqar-otel-tests/redis

redis_start() {
    install_missing redis-server
    if ! listening 6379; then
        say "starting Redis on $HOST:6379 (no persistence, $REDIS_DIR)"
        mkdir -p "$REDIS_DIR"
        redis-server --bind "$HOST" --port 6379 --protected-mode yes \
            --save '' --appendonly no --dir "$REDIS_DIR" \
            --daemonize yes --pidfile "$REDIS_DIR/redis.pid" \
            --logfile "$REDIS_DIR/redis.log"
        wait_port Redis 6379
    fi
}

redis_stop() {
    if [ -f "$REDIS_DIR/redis.pid" ] && kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null; then
        rm -f "$REDIS_DIR/redis.pid"
        say "stopped Redis"
    fi
}

status() {
    local name port
    for name in MariaDB:3306 PostgreSQL:5432 Redis:6379; do
        port=${name#*:}
        if listening "$port"; then echo "${name%:*}: listening on $HOST:$port"
        else echo "${name%:*}: not listening on $HOST:$port"; fi
    done
}

case "$action" in
    start)
        postgres_start
        mariadb_start
        redis_start
        install_missing chromium
        install_missing prometheus
        [ "$said" = 1 ] || echo "services: MariaDB, PostgreSQL and Redis already running on $HOST; nothing changed"
        ;;
    stop) redis_stop; mariadb_stop; postgres_stop ;;
    status) status ;;
    *) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac
