#!/usr/bin/env python3
"""Issue #21's runs of a chat's jobs, measured on the statements alone: `wa-outbox bench-sql`'s cycle
(the worker's own claim and completion) with runs of one job a chat, as every claim took before
runs, and of RUN jobs, as a worker without Redis takes now. pgbench runs both alternately on fresh
fills of the drain's shape, 2 clients. Per cycle: jobs/s, rows written and WAL bytes per job.

Run with harness.py's environment; measures, asserts nothing about time.
"""
import json
import subprocess

import harness as h
from common import log

RUN = 10
BATCH = 500
JOBS = 20_000 if h.QUICK else 200_000
SECONDS = 3 if h.QUICK else 15


def counters():
    row = h.psql("""SELECT (SELECT wal_bytes FROM pg_stat_wal),
                           (SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE schemaname = 'wa_outbox')""")
    return [float(x) for x in row.split("|")]


def measure(call):
    h.reset()
    h.fill(JOBS)
    h.psql("SELECT pg_stat_force_next_flush()")
    before = counters()
    script = f"{h.WORK}/runs.sql"
    with open(script, "w") as f:
        f.write(f"SELECT {call};\n")
    subprocess.run(["pgbench", "-n", "-c", "2", "-j", "2", "-T", str(SECONDS), "-f", script, h.DB], check=True, capture_output=True)
    rate, count, _ = h.sent_rate()
    h.psql("SELECT pg_stat_force_next_flush()")
    after = counters()
    return {"jobs_per_s": round(rate), "jobs": count, "rows_per_job": round((after[1] - before[1]) / max(count, 1), 2),
            "wal_bytes_per_job": round((after[0] - before[0]) / max(count, 1))}


def main():
    cycle = subprocess.run([h.BIN, "bench-sql"], capture_output=True, text=True, check=True).stdout
    h.psql(cycle)
    out = {"per job": [], f"runs of {RUN}": []}
    for _ in range(1 if h.QUICK else 2):
        for name, call in (("per job", f"wa_bench.cycle({BATCH}, 1)"), (f"runs of {RUN}", f"wa_bench.cycle({BATCH}, {RUN})")):
            result = measure(call)
            out[name].append(result)
            log(f"  {name:>10}: {result['jobs_per_s']:,} jobs/s, {result['rows_per_job']} rows and {result['wal_bytes_per_job']:,} B of WAL per job")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
