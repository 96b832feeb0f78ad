#!/usr/bin/env python3
"""Peers for scripts/bench, on the same PostgreSQL server and settings as wa-outbox: pgqueuer and
procrastinate (from PyPI) draining N no-op jobs with their own high-throughput settings, and
pgqueuer's enqueue-to-start latency (run by the latency scenario, alternating with wa-outbox's).
Each runs in a database of its own.

usage: PEER_DB=postgres://… peers.py N QUICK                     the drains; one JSON line of results last
       PEER_DB=postgres://… peers.py --pgqueuer-latency RATE SECONDS  pgqueuer's latency; one JSON line
       peers.py --pgqueuer-consumer URL FILE                         (started by the latency run)
"""
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta

MODE = sys.argv[1] if sys.argv[1:2] and sys.argv[1].startswith("--") else None
BASE = os.environ.get("PEER_DB", "")
N = 0 if MODE else int(sys.argv[1])
QUICK = not MODE and sys.argv[2] == "1"


def database(name):
    subprocess.run(["psql", BASE, "-qAtX", "-c", f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True)
    return BASE.rsplit("/", 1)[0] + "/" + name


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def clear(connection):
    """Empties pgqueuer's tables between runs."""
    tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'pgqueuer%'")
    if tables:
        await connection.execute("TRUNCATE " + ", ".join(t["tablename"] for t in tables))


async def pgqueuer_drain(url, batch_size):
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    connection = await asyncpg.connect(url)
    driver = AsyncpgDriver(connection)
    queries = Queries(driver)
    if not await queries.schema_is_installed():
        await queries.install()
    await clear(connection)
    for start in range(0, N, 10_000):
        count = min(10_000, N - start)
        await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
    manager = QueueManager(queries)
    done = 0
    first = last = None

    @manager.entrypoint("noop")
    async def noop(job):
        nonlocal done, first, last
        now = time.perf_counter()
        first = first or now
        last = now
        done += 1

    await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
    await connection.close()
    return {"batch_size": batch_size, "jobs": done, "jobs_per_s": round(done / (last - first)) if done > 1 else 0}


async def pgqueuer_consumer(url, out):
    """pgqueuer's side of the latency run, in a process of its own (as the producer is): writes
    each job's key and the wall-clock time its entrypoint started, until SIGTERM."""
    import asyncpg
    import signal
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    connection = await asyncpg.connect(url)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, manager.shutdown.set)
    with open(out, "w", buffering=1) as f:
        @manager.entrypoint("timed")
        async def timed(job):
            f.write(f"{job.payload.decode()} {time.time()}\n")

        print("ready", flush=True)
        await manager.run(batch_size=10)
    await connection.close()


async def pgqueuer_latency(url, rate, seconds):
    """Enqueue-to-start latency with paced.produce (wa-outbox's latency runs use it too), one
    producer, and pgqueuer's consumer in another process, as a worker would run."""
    import asyncpg
    import paced
    from pgqueuer import AsyncpgDriver, Queries

    producer_connection = await asyncpg.connect(url)
    producer = Queries(AsyncpgDriver(producer_connection))
    if not await producer.schema_is_installed():
        await producer.install()
    await clear(producer_connection)
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pgqueuer-latency-{os.getpid()}.txt")
    consumer = subprocess.Popen([sys.executable, __file__, "--pgqueuer-consumer", url, out], stdout=subprocess.PIPE, text=True)
    consumer.stdout.readline()
    await asyncio.sleep(1)

    async def enqueue(n):
        await producer.enqueue("timed", str(n).encode())
        return str(n)

    started = await paced.produce(rate, seconds, [enqueue])
    await asyncio.sleep(1)
    consumer.terminate()
    consumer.wait(timeout=30)
    await producer_connection.close()
    latencies = []
    with open(out) as f:
        for line in f:
            key, at = line.split()
            if key in started:
                latencies.append((float(at) - started[key]) * 1000)
    os.remove(out)
    return {"rate": rate, "jobs": len(latencies), "p50_ms": round(percentile(latencies, 50), 2),
            "p95_ms": round(percentile(latencies, 95), 2), "p99_ms": round(percentile(latencies, 99), 2)}


async def procrastinate_drain(url, count):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    done = 0
    first = last = None

    @app.task(name="noop")
    async def noop():
        nonlocal done, first, last
        now = time.perf_counter()
        first = first or now
        last = now
        done += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, count, 5_000):
            await noop.batch_defer_async(*([{}] * min(5_000, count - start)))
        # Its documented knobs for throughput: async tasks with high concurrency, finished jobs deleted.
        await app.run_worker_async(concurrency=50, wait=False, delete_jobs="always", install_signal_handlers=False)
    return {"jobs": done, "jobs_per_s": round(done / (last - first)) if done > 1 else 0}


def main():
    results = {}
    url = database("peer_pgqueuer")
    best = None
    for batch_size in ((10, 50) if QUICK else (10, 50, 100, 200)):
        run = asyncio.run(pgqueuer_drain(url, batch_size))
        print(f"pgqueuer batch {batch_size}: {run}", flush=True)
        if not best or run["jobs_per_s"] > best["jobs_per_s"]:
            best = run
    results["pgqueuer"] = best
    count = min(N, 5_000 if QUICK else 30_000)
    results["procrastinate"] = asyncio.run(procrastinate_drain(database("peer_procrastinate"), count))
    print(f"procrastinate: {results['procrastinate']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    if MODE == "--pgqueuer-consumer":
        asyncio.run(pgqueuer_consumer(sys.argv[2], sys.argv[3]))
    elif MODE == "--pgqueuer-latency":
        print(json.dumps(asyncio.run(pgqueuer_latency(database("peer_pgqueuer_latency"), int(sys.argv[2]), int(sys.argv[3])))))
    else:
        main()
