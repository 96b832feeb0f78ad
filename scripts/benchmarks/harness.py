#!/usr/bin/env python3
"""wa-outbox benchmarks. Run through scripts/bench, which builds the release binary and starts
throwaway PostgreSQL (durable commits) and Redis servers, then calls this with:

  WA_BIN, DATABASE_URL, BENCH_REDIS_URL, BENCH_OUT (folder for results.json and chart.png)

Each scenario prints its figures and adds them to results.json. Nothing here asserts a time.
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time  # noqa: E401

from common import machine_facts
from stats import median_percentiles, percentile, percentiles

BIN = os.environ["WA_BIN"]
DB = os.environ["DATABASE_URL"]
REDIS = os.environ["BENCH_REDIS_URL"]
OUT = os.environ.get("BENCH_OUT", "benchmarks")
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_JOBS", "2000" if QUICK else "100000"))
SESSIONS, CHATS = (50, 4) if QUICK else (1000, 10)
WORK = tempfile.mkdtemp(prefix="wa-bench-")
results = {}


def log(*parts):
    print(*parts, flush=True)


def psql(sql, db=DB):
    done = subprocess.run(["psql", db, "-qAtX", "-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr}\n{sql[:500]}")
    return done.stdout.strip()


def reset(sessions=SESSIONS, max_in_flight=1):
    psql(f"""
        TRUNCATE wa_outbox.jobs, wa_outbox.lanes, wa_outbox.events, wa_outbox.workers, wa_outbox.audit;
        DELETE FROM wa_outbox.sessions;
        INSERT INTO wa_outbox.sessions (id, org, engine, max_in_flight)
        SELECT 's' || g, 'org1', 'sim', {max_in_flight} FROM generate_series(1, {sessions}) g;
    """)


def fill(n, sessions=SESSIONS, chats=CHATS, hot=0, by_session=False):
    """Queues n text sends over sessions x chats (job g to session g % sessions; `by_session`: the
    first n / sessions to s1, then s2's, each to a chat of its own, as campaigns enqueued one
    after another), plus `hot` sends to one chat of session s1, in bulk: jobs, then their lanes in
    the order enqueue creates them (a chat's first job first). Message ids are new every time (a
    sent id's Redis lock lives on for its TTL). Ends with a CHECKPOINT, so the fill's dirty pages
    are not written during the measurement that follows."""
    per = max(1, n // sessions)
    session, chat = (f"least(g / {per} + 1, {sessions})", f"g % {per}") if by_session else (f"(g % {sessions} + 1)", f"(g / {sessions}) % {chats}")
    chat = f"(4915100000000 + {chat})::text || '@s.whatsapp.net'"
    salt = os.urandom(4).hex().upper()
    psql(f"""
        INSERT INTO wa_outbox.jobs (org, session_id, chat, kind, wa_message_id, payload, deadline)
        SELECT 'org1', 's' || {session}, {chat}, 'send', '3EB0{salt}' || lpad(upper(to_hex(g)), 10, '0'),
               jsonb_build_object('type', 'text', 'chat', {chat}, 'text', 'bench ' || g), now() + interval '1 day'
        FROM generate_series(0, {n} - 1) g;
        INSERT INTO wa_outbox.jobs (org, session_id, chat, kind, wa_message_id, payload, deadline)
        SELECT 'org1', 's1', '4915199999999@s.whatsapp.net', 'send', '3EB1{salt}' || lpad(upper(to_hex(g)), 10, '0'),
               jsonb_build_object('type', 'text', 'chat', '4915199999999@s.whatsapp.net', 'text', 'hot ' || g), now() + interval '1 day'
        FROM generate_series(1, {hot}) g;
        INSERT INTO wa_outbox.lanes (session_id, chat, org, pending, busy, ready_at)
        SELECT session_id, chat, 'org1', count(*), false, now() FROM wa_outbox.jobs WHERE state = 'queued' GROUP BY 1, 2 ORDER BY min(id);
        VACUUM ANALYZE wa_outbox.jobs;
        VACUUM ANALYZE wa_outbox.lanes;
        VACUUM ANALYZE wa_outbox.sessions;
        CHECKPOINT;
    """)


WORKER_ARGS = ["--poll-interval-ms", "100", "--rate-per-second", "1000000", "--burst", "1000000", "--pacing", "off",
               "--admin-listen", "off"]


def start_worker(extra=(), redis=False, exit_when_idle=True, name="w"):
    env = dict(os.environ, DATABASE_URL=DB, WA_OUTBOX_LOG_LEVEL="warning")
    env.pop("REDIS_URL", None)
    args = [BIN, "worker", "--name", name] + WORKER_ARGS + list(extra)
    if exit_when_idle:
        args.append("--exit-when-idle")
    args += ["--redis-url", REDIS] if redis else ["--no-limits"]
    stderr = open(os.path.join(WORK, f"{name}.log"), "w+")
    return subprocess.Popen(args, env=env, stderr=stderr, stdout=subprocess.DEVNULL), stderr


def finish_worker(process, stderr, timeout=None):
    """Waits for the worker (SIGTERM after `timeout` seconds: it stops gracefully); returns its
    peak RSS in MB, from the kernel's accounting of the child (wait4)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG if deadline is not None else 0)
        if pid:
            break
        if time.monotonic() >= deadline:
            process.send_signal(signal.SIGTERM)
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, -15):
        stderr.seek(0)
        log(stderr.read()[-2000:])
    return usage.ru_maxrss / 1024


def sent_rate(first=None):
    """Jobs per second between the first and the last 'sent' event, and how many; with `first`,
    over the first that many only (the same amount of work from every queue)."""
    limit = f" ORDER BY created_at LIMIT {int(first)}" if first else ""
    row = psql("SELECT count(*), extract(epoch FROM max(created_at) - min(created_at)) FROM "
               f"(SELECT created_at FROM wa_outbox.events WHERE status = 'sent'{limit}) sent")
    count, seconds = row.split("|")
    count, seconds = int(count), float(seconds or 0)
    return (count / seconds if seconds > 0 else 0.0), count, seconds


def median_drain(runs):
    """The run with the median rate, with every run's rate listed as `runs_jobs_per_s`."""
    median = dict(sorted(runs, key=lambda r: r["jobs_per_s"])[len(runs) // 2])
    median["runs_jobs_per_s"] = [r["jobs_per_s"] for r in runs]
    return median


def drain(workers=1, redis=False, timeout=None, extra=()):
    started = [start_worker(extra, redis=redis, name=f"drain{i}") for i in range(workers)]
    rss = [finish_worker(p, f, timeout=timeout) for p, f in started]
    rate, count, seconds = sent_rate()
    return {"jobs_per_s": round(rate), "jobs": count, "seconds": round(seconds, 3), "peak_rss_mb": round(max(rss), 1)}


# ---------------------------------------------------------------------------------------------

def filled_drain(workers, **shape):
    reset()
    fill(N, **shape)
    return drain(workers)


def scenario_drain(broadcast=False):
    chats = max(N // SESSIONS, 1) if broadcast else CHATS
    log(f"\n## {'broadcast' if broadcast else 'drain'}: {N:,} queued sends over {SESSIONS} sessions x {chats} chats, "
        "in-process simulator, pacing off, no Redis")
    out = {}
    for workers in (1, 2, 4):
        best = median_drain([filled_drain(workers, chats=chats) for _ in range(1 if QUICK else 3)])
        out[str(workers)] = best
        log(f"  {workers} worker process(es): {best['jobs_per_s']:,} jobs/s median of {best['runs_jobs_per_s']}, "
            f"peak RSS {best['peak_rss_mb']} MB (with the in-process simulator's memory of every message)")
    results["drain_broadcast" if broadcast else "drain"] = out
    if broadcast:  # the same jobs as campaigns, one session's after another's: its chats lie together
        results["drain_campaign"] = median_drain([filled_drain(1, chats=chats, by_session=True) for _ in range(1 if QUICK else 3)])
        log(f"  campaigns one after another, 1 worker: {results['drain_campaign']['jobs_per_s']:,} jobs/s median of {results['drain_campaign']['runs_jobs_per_s']}")
        return
    # The worker's own memory: the same drain with the simulator in its own process (HTTP, wuzapi).
    port = subprocess.run(["bash", os.path.join(os.path.dirname(__file__), "..", "lib", "servers.sh"), "free-port"],
                          capture_output=True, text=True, check=True).stdout.strip()
    simulator = subprocess.Popen([BIN, "simulator", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    reset()
    psql(f"UPDATE wa_outbox.sessions SET engine = 'wuzapi', engine_url = 'http://127.0.0.1:{port}'")
    fill(N)
    http = drain(1)
    simulator.send_signal(signal.SIGTERM)
    simulator.wait()
    results["drain_http"] = http
    log(f"  1 worker, simulator over HTTP in its own process: {http['jobs_per_s']:,} jobs/s, worker peak RSS {http['peak_rss_mb']} MB")


def latency_run(rate, producers, seconds):
    """One latency run of wa-outbox: a fresh queue, one worker, `producers` paced producers
    (paced.py) calling wa_outbox.enqueue; wall clock before each call to the simulator's wall
    clock at dispatch."""
    import asyncio
    import random
    import paced

    async def produce():
        import asyncpg
        connections = [await asyncpg.connect(DB) for _ in range(producers)]

        def enqueuer(connection):
            async def enqueue(n):
                chat = f"{4915100000000 + random.randrange(CHATS)}@s.whatsapp.net"
                return await connection.fetchval("SELECT wa_message_id FROM wa_outbox.enqueue('org1', $1, 'send', $2::jsonb)",
                                                 f"s{random.randint(1, SESSIONS)}", json.dumps({"type": "text", "chat": chat, "text": "latency"}))
            return enqueue

        started = await paced.produce(rate, seconds, [enqueuer(c) for c in connections])
        for connection in connections:
            await connection.close()
        return started

    reset()
    deliveries = os.path.join(WORK, f"deliveries-{rate}.jsonl")
    worker, stderr = start_worker(["--sim-delivery-log", deliveries], exit_when_idle=False, name=f"latency{rate}")
    time.sleep(2)
    started = asyncio.run(produce())
    time.sleep(2)
    finish_worker(worker, stderr, timeout=0)
    latencies = []
    with open(deliveries) as f:
        for line in f:
            d = json.loads(line)
            if d["id"] in started:
                latencies.append((d["time"] - started[d["id"]]) * 1000)
    return {"achieved_per_s": round(len(latencies) / seconds), "producers": producers, "jobs": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
            "p99_ms": round(percentile(latencies, 99), 2)}


def run_json(script, *args):
    """Runs scripts/benchmarks/`script` with the harness's environment; its last line is JSON."""
    done = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), script), *map(str, args)],
                          stdout=subprocess.PIPE, text=True, env=dict(os.environ, PEER_DB=DB))
    if done.returncode != 0:
        log(done.stdout[-3000:])
        raise RuntimeError(f"{script} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pgqueuer_latency_run(rate, seconds):
    return run_json("peers.py", "--pgqueuer-latency", rate, seconds)


def scenario_latency():
    """Enqueue to dispatch, with the load generator pgqueuer's latency uses (paced.py). At 200
    jobs/s, one producer, alternating with pgqueuer's run at the same rate (3 rounds each; the
    medians are reported, the rounds listed). At half the measured maximum, 16 producers (each
    connection waits for its own durable commit); the achieved rate is reported."""
    best = results.get("drain", {}).get("1", {}).get("jobs_per_s") or 5000
    seconds = 5 if QUICK else 15
    rounds = 1 if QUICK else 3
    log(f"\n## latency: enqueue (paced producers calling wa_outbox.enqueue) to dispatch (the simulator's clock), {seconds} s per run")
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(latency_run(200, 1, seconds))
        log(f"  wa-outbox at 200 jobs/s: {percentiles(ours[-1])}")
        theirs.append(pgqueuer_latency_run(200, seconds))
        log(f"  pgqueuer  at 200 jobs/s: {percentiles(theirs[-1])}")
    out = {"200": median_percentiles(ours)}
    results["pgqueuer_latency"] = median_percentiles(theirs)
    rate = max(200, best // 2)
    out[str(rate)] = latency_run(rate, 16, seconds)
    log(f"  wa-outbox at {rate} jobs/s asked from 16 producers, {out[str(rate)]['achieved_per_s']} achieved: {percentiles(out[str(rate)])}")
    results["latency"] = out


def scenario_backlog():
    """One worker for up to `window` seconds over a queue of each size, 3 runs each. Two rates
    per run: over the whole window (the smallest queue drains in under a second, the 1M ones run
    the whole 20 s), and over the first jobs, as many as the smallest queue holds, which is the
    same amount of work at the same phase from every queue; the backlog ratio is taken on that
    one. Each is the median of the runs; one run moved by ±8% here."""
    sizes = [(1_000, 0), (5_000, 0), (5_000, 1_000)] if QUICK else [(10_000, 0), (100_000, 0), (1_000_000, 0), (900_000, 100_000)]
    first = sizes[0][0]
    window = 5 if QUICK else 20
    out = {}
    log(f"\n## backlog: one worker for up to {window} s over a queue of each size; rate over the window and over the first {first:,} jobs")
    for size, hot in sizes:
        runs = []
        for _ in range(1 if QUICK else 3):
            reset()
            fill(size, hot=hot)
            run = drain(1, timeout=window)
            run["first_jobs_per_s"] = round(sent_rate(first)[0])
            runs.append(run)
        result = median_drain(runs)
        result["first_jobs"] = first
        result["first_jobs_per_s"] = round(statistics.median(r["first_jobs_per_s"] for r in runs))
        result["runs_first_jobs_per_s"] = [r["first_jobs_per_s"] for r in runs]
        label = f"{size + hot:,}" + (f" ({hot:,} in one chat)" if hot else "")
        out[label] = result
        log(f"  {label}: {result['jobs_per_s']:,} jobs/s over {result['jobs']:,} jobs (runs: {result['runs_jobs_per_s']}); "
            f"first {first:,} jobs: {result['first_jobs_per_s']:,} jobs/s (runs: {result['runs_first_jobs_per_s']})")
    results["backlog"] = out


def sizes():
    row = psql("SELECT pg_total_relation_size('wa_outbox.jobs'), pg_total_relation_size('wa_outbox.events'), "
               "pg_total_relation_size('wa_outbox.lanes'), (SELECT count(*) FROM wa_outbox.jobs)")
    jobs, events, lanes, rows = (int(x) for x in row.split("|"))
    return {"jobs_mb": round(jobs / 2**20, 1), "events_mb": round(events / 2**20, 1), "lanes_mb": round(lanes / 2**20, 2), "job_rows": rows}


def enqueue(n, sessions=SESSIONS, chats=CHATS):
    """Enqueues n sends through wa_outbox.enqueue, as the API tier does."""
    psql(f"""
        SELECT count(*) FROM (
            SELECT wa_outbox.enqueue('org1', 's' || (g % {sessions} + 1), 'send',
                jsonb_build_object('type', 'text', 'chat', (4915100000000 + (g / {sessions}) % {chats})::text || '@s.whatsapp.net',
                                   'text', 'load ' || g))
            FROM generate_series(0, {n} - 1) g) x;
    """)


def scenario_bloat():
    cycles, per_cycle = (3, 2_000) if QUICK else (10, 100_000)
    log(f"\n## bloat: {cycles} x {per_cycle:,} jobs enqueued (wa_outbox.enqueue) while one worker dispatches and prunes "
        f"every 2 s with retention 0 h; autovacuum as configured")
    reset()
    worker, stderr = start_worker(["--prune-interval-ms", "2000", "--keep-jobs-hours", "0", "--keep-events-hours", "0"],
                                  exit_when_idle=False, name="bloat")
    out = []
    for cycle in range(cycles):
        enqueue(per_cycle)
        while int(psql("SELECT count(*) FROM wa_outbox.jobs WHERE state IN ('queued', 'running')")) > 0:
            time.sleep(0.5)
        time.sleep(3)  # one more prune
        s = sizes()
        out.append(s)
        log(f"  after {(cycle + 1) * per_cycle:,} jobs: jobs {s['jobs_mb']} MB ({s['job_rows']:,} rows left), "
            f"events {s['events_mb']} MB, lanes {s['lanes_mb']} MB")
    finish_worker(worker, stderr, timeout=0)
    results["bloat"] = out


def scenario_redis():
    rounds = 2 if QUICK else int(os.environ.get("BENCH_REDIS_ROUNDS", "5"))
    log(f"\n## redis: 200 sessions x 50 sends, one worker, with and without the Redis gate (limits never bind), {rounds} rounds")
    without, with_redis = [], []
    for _ in range(rounds):
        for redis, bucket in ((False, without), (True, with_redis)):
            reset(sessions=200)
            fill(10_000, sessions=200, chats=5)
            bucket.append(drain(1, redis=redis)["seconds"])
    a, b = statistics.median(without), statistics.median(with_redis)
    results["redis"] = {"without_s": without, "with_s": with_redis, "median_without_s": a, "median_with_s": b,
                        "overhead_pct": round(100 * (b / a - 1), 1)}
    log(f"  median drain: without {a:.3f} s, with {b:.3f} s: Redis adds {100 * (b / a - 1):+.1f}%")
    reset()
    fill(N)
    big = drain(1, redis=True)
    results["redis"]["drain_with_redis"] = big
    log(f"  the {N:,}-job drain with Redis: {big['jobs_per_s']:,} jobs/s")


def scenario_ceiling():
    seconds = 5 if QUICK else 15
    log(f"\n## SQL ceiling: pgbench running the worker's claim and completion statements (wa-outbox bench-sql), {seconds} s")
    psql(subprocess.run([BIN, "bench-sql"], capture_output=True, text=True, check=True).stdout)
    out = {}
    jobs = max(N, 200_000) if not QUICK else N
    for label, call, chats in (("batch 100", "100", CHATS), ("batch 500", "500", CHATS), ("broadcast, batch 500", "500, 10, 500", jobs // SESSIONS)):
        reset()
        fill(jobs, chats=chats)
        script = os.path.join(WORK, "cycle.sql")
        with open(script, "w") as f:
            f.write(f"SELECT wa_bench.cycle({call});\n")
        subprocess.run(["pgbench", "-n", "-c", "2", "-j", "2", "-T", str(seconds), "-f", script, DB], check=True, capture_output=True)
        rate, count, _ = sent_rate()
        out[f"{label}, 2 clients"] = {"jobs_per_s": round(rate), "jobs": count}
        log(f"  {label}, 2 clients: {round(rate):,} jobs/s")
    results["ceiling"] = out


def scenario_peers():
    count = min(N, 20_000) if QUICK else N
    log(f"\n## peers on the same server and settings: {count:,} no-op jobs each")
    results["peers"] = run_json("peers.py", count, 1 if QUICK else 0)
    for name, figures in results["peers"].items():
        log(f"  {name}: {figures}")


def script_scenario(name, title):
    """A scenario that is one script of its own printing JSON last (api.py, console.py)."""
    def scenario():
        log(f"\n## {title}")
        results[name] = run_json(f"{name}.py")
    return scenario


SCENARIOS = {"drain": scenario_drain, "broadcast": lambda: scenario_drain(broadcast=True), "latency": scenario_latency, "backlog": scenario_backlog, "bloat": scenario_bloat,
             "redis": scenario_redis, "ceiling": scenario_ceiling, "peers": scenario_peers,
             "api": script_scenario("api", "gateway API (wa-outbox api): synchronous sends at 100/s beside the engine call alone; async sends under wrk"),
             "console": script_scenario("console", "operator console: each page with 1,000,000 jobs in the table (BENCH_CONSOLE_JOBS; 20,000 with --quick)"),
             "perjob": script_scenario("perjob", "what one job costs: worker and PostgreSQL CPU, rows and WAL per job, 20,000-job drains"),
             "runs": script_scenario("runs", "runs of a chat's jobs, statements only: pgbench on the worker's claim and completion, runs of one job a chat against runs of ten")}


def main():
    chosen = [a for a in sys.argv[1:] if not a.startswith("-")] or list(SCENARIOS)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "results.json")
    if os.path.exists(path) and set(chosen) != set(SCENARIOS):
        results.update(json.load(open(path)))  # a partial run updates the scenarios it ran
    machine = dict(machine_facts(psql), quick=QUICK, jobs=N, sessions=SESSIONS, chats_per_session=CHATS)
    results["machine"] = machine
    log(f"machine: {machine['cpus']} CPUs, {machine['memory_gb']} GB, PostgreSQL {machine['postgres']} {machine['postgres_settings']}")
    for name in chosen:
        SCENARIOS[name]()
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    log(f"\nresults: {path}")


if __name__ == "__main__":
    main()
