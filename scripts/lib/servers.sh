#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis servers on free loopback ports, in a folder of their own.
#
# Sourced by scripts/test, scripts/demo and scripts/bench; also run as a command by tests that
# need a private server they can stop and restart:
#   servers.sh pg-start DIR      prints a postgres:// URL      servers.sh redis-start DIR   prints a redis:// URL
#   servers.sh pg-stop DIR | pg-restart DIR                    servers.sh redis-stop DIR | redis-restart DIR
#   servers.sh install           installs what is missing from apt
# PostgreSQL runs as the 'postgres' user when we are root (it refuses to run as root).
set -euo pipefail

wa_log() { printf '%s\n' "$*" >&2; }

wa_install_deps() {
    local missing=()
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
    pkg-config --exists hiredis 2>/dev/null || missing+=(libhiredis-dev)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    wa_log "installing from apt: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Closes every descriptor but 0-2 in the current (sub)shell, so a daemon started next does not hold
# its launcher's pipes open (a test runner waiting on them would wait forever).
wa_close_inherited_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] && [ "$fd" -ne 255 ] && eval "exec $fd>&-" 2>/dev/null || true
    done
}

# Runs a command with an empty signal mask. A process started from a Swift program's dispatch thread
# inherits a mask that blocks SIGTERM; Redis would then never stop.
wa_unblocked() {
    python3 -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

wa_pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

wa_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the postgres user when we are root.
wa_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# wa_pg_start DIR [durable]: initdb (first time) and start; prints the URL.
# Without 'durable', fsync is off: fine for tests, never for benchmarks.
wa_pg_start() {
    local dir=$1 mode=${2:-fast} bin port
    bin=$(wa_pg_bin)
    mkdir -p "$dir"
    chmod 755 "$dir" "$(dirname "$dir")" 2>/dev/null || true
    if [ ! -f "$dir/port" ]; then
        wa_free_port >"$dir/port"
        [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
        wa_as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; return 1; }
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$dir'"
            echo "max_connections = 500"
            echo "shared_buffers = 256MB"
            if [ "$mode" = durable ]; then
                echo "synchronous_commit = on"
            else
                echo "fsync = off"
                echo "synchronous_commit = off"
                echo "full_page_writes = off"
            fi
        } | wa_as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    port=$(cat "$dir/port")
    (wa_close_inherited_fds; wa_as_pg "$bin/pg_ctl" -D "$dir/data" -o "-p $port" -l "$dir/postgres.log" -w -t 60 start >/dev/null </dev/null) \
        || { tail -n 20 "$dir/postgres.log" >&2; return 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

wa_pg_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    wa_as_pg "$(wa_pg_bin)/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

wa_pg_restart() {
    wa_pg_stop "$1"
    wa_pg_start "$1" >/dev/null
}

# wa_redis_start DIR [cluster]: starts redis-server without persistence; prints the URL. With
# 'cluster', a one-node Redis Cluster that owns every slot (scripts touching two slots fail there).
wa_redis_start() {
    local dir=$1 mode=${2:-} port cluster=()
    mkdir -p "$dir"
    if [ ! -f "$dir/port" ]; then
        port=$(wa_free_port)
        # A cluster node also listens on port + 10000, so its port must be 55535 or lower.
        while [ "$mode" = cluster ] && [ "$port" -gt 55535 ]; do port=$(wa_free_port); done
        echo "$port" >"$dir/port"
    fi
    port=$(cat "$dir/port")
    [ "$mode" = cluster ] && cluster=(--cluster-enabled yes --cluster-config-file "$dir/nodes.conf")
    (wa_close_inherited_fds; wa_unblocked redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        "${cluster[@]}" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null </dev/null)
    local tries=0
    until redis-cli -p "$port" ping >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ $tries -gt 100 ] && { wa_log "redis did not start"; tail -n 20 "$dir/redis.log" >&2; return 1; }
        sleep 0.05
    done
    if [ "$mode" = cluster ]; then
        redis-cli -p "$port" cluster addslotsrange 0 16383 >/dev/null
        until redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok'; do sleep 0.05; done
    fi
    echo "redis://127.0.0.1:$port/0"
}

wa_redis_stop() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    rm -f "$dir/redis.pid"
}

wa_redis_restart() {
    wa_redis_stop "$1"
    wa_redis_start "$1" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cmd=${1:-}
    shift || true
    case "$cmd" in
        install) wa_install_deps ;;
        free-port) wa_free_port ;;
        pg-start) wa_pg_start "$@" ;;
        pg-stop) wa_pg_stop "$@" ;;
        pg-restart) wa_pg_restart "$@" ;;
        redis-start) wa_redis_start "$@" ;;
        redis-stop) wa_redis_stop "$@" ;;
        redis-restart) wa_redis_restart "$@" ;;
        *) wa_log "usage: $0 install | pg-start|pg-stop|pg-restart DIR | redis-start DIR [cluster] | redis-stop|redis-restart DIR"; exit 2 ;;
    esac
fi
