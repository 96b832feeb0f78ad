"""Helpers the benchmark scripts share: stderr logging, psql, a free port, the machine's facts."""
import os
import socket
import subprocess
import sys


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def psql(sql, db=None):
    return subprocess.run(["psql", db or os.environ["DATABASE_URL"], "-qAtX", "-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True,
                          text=True, check=True).stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_facts(psql):
    """CPUs, memory, and the PostgreSQL version and settings a run measured on."""
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "postgres": psql("SHOW server_version"),
        "postgres_settings": dict(line.split("|") for line in psql(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', "
            "'full_page_writes', 'max_connections', 'wal_level', 'max_wal_size', 'autovacuum') ORDER BY name").splitlines()),
    }
