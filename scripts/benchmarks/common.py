"""Helpers the benchmark scripts that start processes share: stderr logging, psql, a free port."""
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
