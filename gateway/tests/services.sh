#!/usr/bin/env bash
# Real Redis and ClickHouse for the gateway's tests, on loopback, each with its own data directory.
#
#   gateway/tests/services.sh start   # install (apt) if missing, start, print the env to export
#   gateway/tests/services.sh env     # print the env of the running services again
#   gateway/tests/services.sh stop    # stop them and remove their directories
#
# `start` prints, and writes to "$BUD_TEST_SERVICES_DIR/env":
#   export BUD_TEST_REDIS_URL=redis://127.0.0.1:PORT/
#   export BUD_TEST_CLICKHOUSE_URL=http://127.0.0.1:PORT
# so CI can run:  eval "$(gateway/tests/services.sh start)"; cargo test -p bud-gateway; gateway/tests/services.sh stop
# Progress goes to stderr; only the export lines go to stdout.
#
# With BUD_TEST_CHDB=1, `start` also runs current ClickHouse's engine (chDB from PyPI, in a venv
# under BUD_TEST_CHDB_VENV) behind usage_chdb_http.py and exports
#   export BUD_TEST_CLICKHOUSE_CURRENT_URL=http://127.0.0.1:PORT
#
# Debian's clickhouse-server is 18.16 (the oldest version the exporter supports); a current
# `clickhouse` single binary found on PATH works too. Tests that need an outage start their own
# servers; these shared ones serve the rest.
set -euo pipefail

dir="${BUD_TEST_SERVICES_DIR:-/tmp/bud-test-services}"
log() { echo "services.sh: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until "$@" succeeds, at most $1 seconds (a deadline, not a fixed sleep).
wait_until() {
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${seconds}s waiting for $what"
            return 1
        fi
        sleep 0.1
    done
}

install_missing() {
    local packages=()
    command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || packages+=(redis-server)
    command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || command -v clickhouse >/dev/null ||
        packages+=(clickhouse-server clickhouse-client)
    if ((${#packages[@]})); then
        log "installing ${packages[*]} (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
    fi
    # The packages' own services (if their postinst started any) are not ours: leave them.
}

clickhouse_command() {
    if command -v clickhouse-server >/dev/null; then
        echo clickhouse-server
    elif [ -x /usr/sbin/clickhouse-server ]; then
        echo /usr/sbin/clickhouse-server
    else
        echo "clickhouse server"
    fi
}

redis_ping() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'PING\r\n' >&3
    local answer
    read -r -t 2 answer <&3 || return 1
    exec 3>&-
    [[ "$answer" == +PONG* ]]
}

clickhouse_ping() {
    exec 4<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&4
    local answer
    answer="$(timeout 2 cat <&4)" || return 1
    exec 4>&-
    [[ "$answer" == *"Ok."* ]]
}

start_redis() {
    local port
    port="$(free_port)"
    mkdir -p "$dir/redis"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --protected-mode no \
        --dir "$dir/redis" --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
    wait_until 30 "redis-server on port $port" redis_ping "$port"
    echo "export BUD_TEST_REDIS_URL=redis://127.0.0.1:$port/" >>"$dir/env"
    log "redis-server ready on 127.0.0.1:$port"
}

start_clickhouse() {
    local http_port tcp_port ch="$dir/clickhouse"
    http_port="$(free_port)"
    tcp_port="$(free_port)"
    mkdir -p "$ch/data" "$ch/tmp" "$ch/user_files" "$ch/format_schemas"
    # `<yandex>` is the root element both 18.16 and current ClickHouse accept.
    cat >"$ch/config.xml" <<EOF
<yandex>
  <logger><level>warning</level><log>$ch/server.log</log><errorlog>$ch/error.log</errorlog><console>0</console></logger>
  <http_port>$http_port</http_port>
  <tcp_port>$tcp_port</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$ch/data/</path>
  <tmp_path>$ch/tmp/</tmp_path>
  <user_files_path>$ch/user_files/</user_files_path>
  <format_schema_path>$ch/format_schemas/</format_schema_path>
  <users_config>$ch/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
    cat >"$ch/users.xml" <<'EOF'
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
    # shellcheck disable=SC2046 # "clickhouse server" is two words on purpose
    (cd "$ch" && exec setsid $(clickhouse_command) --config-file="$ch/config.xml" >"$ch/stdout.log" 2>&1) &
    echo $! >"$ch/clickhouse.pid"
    wait_until 60 "clickhouse-server on port $http_port" clickhouse_ping "$http_port"
    echo "export BUD_TEST_CLICKHOUSE_URL=http://127.0.0.1:$http_port" >>"$dir/env"
    log "clickhouse-server ready on 127.0.0.1:$http_port"
}

stop_pid_file() {
    local file="$1"
    [ -f "$file" ] || return 0
    local pid
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

start_chdb() {
    local venv="${BUD_TEST_CHDB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/bud-foundry/chdb-venv}"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import chdb' 2>/dev/null; then
        log "installing chdb (PyPI) into $venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q chdb >&2
    fi
    mkdir -p "$dir/chdb"
    "$venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/usage_chdb_http.py" --port 0 --path "$dir/chdb/data" \
        >"$dir/chdb/stdout.log" 2>"$dir/chdb/stderr.log" &
    echo $! >"$dir/chdb/chdb.pid"
    wait_until 60 "the chDB HTTP stand-in" grep -q '^listening on ' "$dir/chdb/stdout.log"
    local address
    address="$(awk '/^listening on / {print $3; exit}' "$dir/chdb/stdout.log")"
    echo "export BUD_TEST_CLICKHOUSE_CURRENT_URL=http://$address" >>"$dir/env"
    log "current ClickHouse engine ($(cat "$dir/chdb/stderr.log")) ready on $address"
}

stop() {
    stop_pid_file "$dir/chdb/chdb.pid"
    stop_pid_file "$dir/redis/redis.pid"
    stop_pid_file "$dir/clickhouse/clickhouse.pid"
    rm -rf "$dir"
    log "stopped"
}

case "${1:-start}" in
start)
    if [ -f "$dir/env" ]; then
        log "already running (services.sh stop first); their env:"
        cat "$dir/env"
        exit 0
    fi
    install_missing
    mkdir -p "$dir"
    : >"$dir/env.partial"
    trap 'log "start failed; stopping what started"; stop' ERR
    mv "$dir/env.partial" "$dir/env"
    start_redis
    start_clickhouse
    if [ "${BUD_TEST_CHDB:-}" = 1 ]; then
        start_chdb
    fi
    trap - ERR
    cat "$dir/env"
    ;;
env)
    cat "$dir/env"
    ;;
stop)
    stop
    ;;
*)
    echo "usage: $0 start|env|stop" >&2
    exit 2
    ;;
esac
