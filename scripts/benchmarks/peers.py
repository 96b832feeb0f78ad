#!/usr/bin/env python3
"""Peers for scripts/bench, on the same PostgreSQL server and settings as wa-outbox: pgqueuer and
procrastinate (from PyPI) draining N no-op jobs with their own high-throughput settings, and
pgqueuer's enqueue-to-start latency at 200 jobs/s. Each runs in a database of its own.

usage: PEER_DB=postgres://… peers.py N QUICK   prints one JSON line of results last.
"""
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta

BASE = os.environ["PEER_DB"]
N = int(sys.argv[1])
QUICK = sys.argv[2] == "1"


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


async def pgqueuer_latency(url, rate, seconds):
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    consumer_connection = await asyncpg.connect(url)
    producer_connection = await asyncpg.connect(url)
    await clear(producer_connection)
    manager = QueueManager(Queries(AsyncpgDriver(consumer_connection)))
    producer = Queries(AsyncpgDriver(producer_connection))
    latencies = []

    @manager.entrypoint("timed")
    async def timed(job):
        latencies.append((time.time() - float(job.payload.decode())) * 1000)

    async def produce():
        interval = 1 / rate
        next_at = time.monotonic()
        end = next_at + seconds
        while next_at < end:
            await producer.enqueue("timed", str(time.time()).encode())
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.monotonic()))
        await asyncio.sleep(1)
        manager.shutdown.set()

    await asyncio.gather(manager.run(batch_size=10), produce())
    await consumer_connection.close()
    await producer_connection.close()
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
    results["pgqueuer_latency"] = asyncio.run(pgqueuer_latency(url, 200, 5 if QUICK else 15))
    print(f"pgqueuer latency: {results['pgqueuer_latency']}", flush=True)
    count = min(N, 5_000 if QUICK else 30_000)
    results["procrastinate"] = asyncio.run(procrastinate_drain(database("peer_procrastinate"), count))
    print(f"procrastinate: {results['procrastinate']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
