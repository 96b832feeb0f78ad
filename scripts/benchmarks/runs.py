#!/usr/bin/env python3
"""Issue #21's runs of a chat's jobs, measured on the statements alone: what PostgreSQL does when a
claim takes a lane's first RUN queued jobs instead of its head, beside today's statements.

The prototype is `wa-outbox bench-sql`'s cycle (the worker's own claim and completion) with four
edits, each asserted to match once: the head probe's `LIMIT 1` takes RUN jobs; the lane records
the run's first job; the session's in-flight count and the completion's decrement count lanes
(a run is one send at a time), not jobs. pgbench runs both cycles alternately on fresh fills of
the drain's shape, 2 clients. Per cycle: jobs/s, rows written and WAL bytes per job.

Not the worker: what the worker needs to send runs is in docs/benchmarks-analysis.md (*What
would move it*). Run with harness.py's environment; measures, asserts nothing about time.
"""
import json
import subprocess

import harness as h
from common import log

RUN = 10
BATCH = 500
JOBS = 20_000 if h.QUICK else 200_000
SECONDS = 3 if h.QUICK else 15


def edit(sql, old, new):
    assert sql.count(old) == 1, f"the prototype's edit no longer matches bench-sql's output: {old!r}"
    return sql.replace(old, new)


def prototype(cycle):
    sql = edit(cycle, "FUNCTION wa_bench.cycle(batch int)", "FUNCTION wa_bench.cycle_runs(batch int, run int)")
    sql = edit(sql, "LIMIT 1\n", "LIMIT $5\n")
    sql = edit(sql, "USING batch * 4, batch, worker, gen_random_uuid() LOOP", "USING batch * 4, batch, worker, gen_random_uuid(), run LOOP")
    sql = edit(sql, "FROM claimed c WHERE l.session_id = c.session_id AND l.chat = c.chat",
               "FROM (SELECT session_id, chat, min(id) AS id FROM claimed GROUP BY 1, 2) c WHERE l.session_id = c.session_id AND l.chat = c.chat")
    sql = edit(sql, "FROM (SELECT session_id, count(*)::int AS n FROM claimed GROUP BY session_id) c",
               "FROM (SELECT session_id, count(DISTINCT chat)::int AS n FROM claimed GROUP BY session_id) c")
    return edit(sql, "FROM (SELECT session_id, count(*)::int AS n,\n", "FROM (SELECT session_id, count(DISTINCT chat)::int AS n,\n")


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
    h.psql(prototype(cycle))
    out = {"per job": [], f"runs of {RUN}": []}
    for _ in range(1 if h.QUICK else 2):
        for name, call in (("per job", f"wa_bench.cycle({BATCH})"), (f"runs of {RUN}", f"wa_bench.cycle_runs({BATCH}, {RUN})")):
            result = measure(call)
            out[name].append(result)
            log(f"  {name:>10}: {result['jobs_per_s']:,} jobs/s, {result['rows_per_job']} rows and {result['wal_bytes_per_job']:,} B of WAL per job")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
