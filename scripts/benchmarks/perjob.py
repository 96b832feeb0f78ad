#!/usr/bin/env python3
"""What one job costs (issue #21's measurements), on a fixed drain of 20,000 jobs over 1,000
sessions, twice per shape: the drain's (10 chats a session) and the broadcast's (one job a chat).
One worker, the in-process simulator, no Redis, durable commits. Per job:

  worker CPU    user + system time of the worker process (wait4), from start to exit
  PostgreSQL    CPU of every postgres process over the drain (the postmaster's reaped backends
                included), rows written (pg_stat_user_tables) and WAL (pg_stat_wal)

Instructions per job are not counted: this VM exposes no hardware counters to `perf`, and
valgrind 3.19 cannot run the Swift binary (DWARF 5; stripped, it crashes in libdispatch).
Run with harness.py's environment (WA_BIN, DATABASE_URL, BENCH_REDIS_URL). Measures; asserts nothing.
"""
import json
import os
import subprocess
import time

import harness as h
from common import log

JOBS = 20_000


def pg_cpu_seconds(postmaster):
    """CPU seconds of this PostgreSQL server so far: its postmaster's and live children's own, and
    the postmaster's reaped children's (backends that ended)."""
    def times(pid):
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return fields[1], [int(x) for x in fields[11:15]]
    _, (utime, stime, cutime, cstime) = times(postmaster)
    total = utime + stime + cutime + cstime
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent, (utime, stime, _, _) = times(pid)
        except OSError:
            continue
        if parent == postmaster:
            total += utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def counters(postmaster):
    row = h.psql("""
        SELECT (SELECT wal_records FROM pg_stat_wal), (SELECT wal_bytes FROM pg_stat_wal),
               (SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE schemaname = 'wa_outbox')
    """)
    return [float(x) for x in row.split("|")] + [pg_cpu_seconds(postmaster)]


def drain(shape):
    chats = 10 if shape == "drain" else JOBS  # broadcast: 20 chats a session, one job each
    data = h.psql("SHOW data_directory")
    postmaster = open(os.path.join(data, "postmaster.pid")).readline().strip()
    h.reset(sessions=1000)
    h.fill(JOBS, sessions=1000, chats=chats)
    h.psql("SELECT pg_stat_force_next_flush()")
    time.sleep(0.6)
    before = counters(postmaster)
    worker = subprocess.Popen([h.BIN, "worker", "--name", "w"] + h.WORKER_ARGS + ["--exit-when-idle", "--no-limits"],
                              env=dict(os.environ, DATABASE_URL=h.DB, WA_OUTBOX_LOG_LEVEL="warning"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(worker.pid, 0)
    time.sleep(0.8)
    h.psql("SELECT pg_stat_force_next_flush()")
    time.sleep(0.6)
    wal_records, wal_bytes, rows, pg_cpu = (a - b for a, b in zip(counters(postmaster), before))
    done = int(h.psql("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'"))
    return {"shape": shape, "jobs": done,
            "worker_cpu_us": round((usage.ru_utime + usage.ru_stime) / done * 1e6, 1),
            "postgres_cpu_us": round(pg_cpu / done * 1e6, 1), "rows_written": round(rows / done, 2),
            "wal_bytes": round(wal_bytes / done), "wal_records": round(wal_records / done, 1)}


def main():
    runs = [drain(shape) for shape in ("drain", "drain", "broadcast", "broadcast")]
    for run in runs:
        log(f"  {run['shape']:>9}: per job worker {run['worker_cpu_us']} µs CPU, "
              f"PostgreSQL {run['postgres_cpu_us']} µs CPU, {run['rows_written']} rows, {run['wal_bytes']} B WAL "
              f"({run['wal_records']} records)")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
