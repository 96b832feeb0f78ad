#!/usr/bin/env python3
"""Draws benchmarks/chart.png from results.json: drain throughput beside the peers and the SQL
ceiling, enqueue-to-dispatch latency, and table sizes under sustained load with pruning."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.load(open(sys.argv[1]))
figure, (throughput, latency, bloat) = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [2, 1, 1]})

bars = {}
for workers, run in results.get("drain", {}).items():
    bars[f"wa-outbox\n{workers} worker{'s' if workers != '1' else ''}"] = run["jobs_per_s"]
if "redis" in results and "drain_with_redis" in results["redis"]:
    bars["wa-outbox\n1 worker + Redis"] = results["redis"]["drain_with_redis"]["jobs_per_s"]
for name, run in results.get("ceiling", {}).items():
    bars[f"SQL ceiling\n{name.split(',')[0]}"] = run["jobs_per_s"]
peers = results.get("peers", {})
for name in ("pgqueuer", "procrastinate"):
    if name in peers:
        bars[name] = peers[name]["jobs_per_s"]
colors = ["#2b6cb0" if k.startswith("wa-outbox") else "#718096" if k.startswith("SQL") else "#dd6b20" for k in bars]
throughput.bar(range(len(bars)), list(bars.values()), color=colors)
throughput.set_xticks(range(len(bars)), [k.replace("\n", " ") for k in bars], fontsize=8, rotation=30, ha="right")
throughput.set_ylabel("jobs/s (durable commits)")
throughput.set_title("Drain throughput, same server")
for i, value in enumerate(bars.values()):
    throughput.text(i, value, f"{value:,}", ha="center", va="bottom", fontsize=7)

rows = [(f"wa-outbox\n{rate}/s", run) for rate, run in results.get("latency", {}).items()]
if "pgqueuer_latency" in results:
    rows.append((f"pgqueuer\n{results['pgqueuer_latency']['rate']}/s", results["pgqueuer_latency"]))
for offset, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
    latency.bar([i + offset * 0.27 for i in range(len(rows))], [run[key] for _, run in rows], width=0.27, label=key[:3])
latency.set_xticks([i + 0.27 for i in range(len(rows))], [name for name, _ in rows], fontsize=8)
latency.set_ylabel("ms, enqueue to dispatch")
latency.set_title("Latency")
latency.legend()

cycles = results.get("bloat", [])
if cycles:
    x = [(i + 1) for i in range(len(cycles))]
    bloat.plot(x, [c["jobs_mb"] for c in cycles], marker="o", label="jobs (table + indexes)")
    bloat.plot(x, [c["events_mb"] for c in cycles], marker="o", label="events")
    bloat.plot(x, [c["lanes_mb"] for c in cycles], marker="o", label="lanes")
    bloat.set_xlabel("cycles of jobs through the queue")
    bloat.set_ylabel("MB")
    bloat.set_title("Size under sustained load, pruning on")
    bloat.legend()

machine = results.get("machine", {})
figure.suptitle(f"wa-outbox benchmarks: {machine.get('cpus')} CPUs, PostgreSQL {machine.get('postgres')}, "
                f"synchronous_commit={machine.get('postgres_settings', {}).get('synchronous_commit')}", fontsize=10)
figure.tight_layout()
figure.savefig(sys.argv[2], dpi=110)
print(f"chart: {sys.argv[2]}")

# The table for BENCHMARKS.md, beside the chart.
lines = ["| measure | result | beside it |", "|---|---|---|"]
drain = results.get("drain", {})
peers = results.get("peers", {})
ceiling = results.get("ceiling", {})
fastest_peer = max((peers[p]["jobs_per_s"] for p in ("pgqueuer", "procrastinate") if p in peers), default=None)
# The drain is compared with the best ceiling measured, whatever its batch size: the stricter ratio.
best_ceiling = max(((k, v) for k, v in ceiling.items() if not k.startswith("broadcast") and v["jobs_per_s"] > 0), key=lambda item: item[1]["jobs_per_s"], default=None)
for workers, run in drain.items():
    ratios = []
    if fastest_peer:
        ratios.append(f"{run['jobs_per_s'] / fastest_peer:.2f}x the faster peer")
    if best_ceiling:
        ratios.append(f"{100 * run['jobs_per_s'] / best_ceiling[1]['jobs_per_s']:.0f}% of the best SQL ceiling ({best_ceiling[0].split(',')[0]})")
    lines.append(f"| drain, {workers} worker(s) | {run['jobs_per_s']:,} jobs/s (runs: {run.get('runs_jobs_per_s')}) | {'; '.join(ratios)} |")
for workers, run in results.get("drain_broadcast", {}).items():
    beside = f"{run['jobs_per_s'] / fastest_peer:.2f}x the faster peer" if fastest_peer else ""
    broadcast_ceiling = ceiling.get("broadcast, batch 500, 2 clients")
    # CI's quick run (500 jobs) can send all of the broadcast's in one cycle, one commit: no time
    # between its first and last send, so 0 jobs/s, and no ratio then.
    if broadcast_ceiling and broadcast_ceiling["jobs_per_s"] > 0:
        beside += f"; {100 * run['jobs_per_s'] / broadcast_ceiling['jobs_per_s']:.0f}% of its SQL ceiling"
    lines.append(f"| broadcast (one job a chat), {workers} worker(s) | {run['jobs_per_s']:,} jobs/s (runs: {run.get('runs_jobs_per_s')}) | {beside} |")
if "drain_campaign" in results:
    run = results["drain_campaign"]
    lines.append(f"| broadcast as campaigns one session after another, 1 worker | {run['jobs_per_s']:,} jobs/s (runs: {run.get('runs_jobs_per_s')}) | |")
if "drain_http" in results:
    lines.append(f"| drain, 1 worker, simulator over HTTP | {results['drain_http']['jobs_per_s']:,} jobs/s | |")
for name, run in ceiling.items():
    lines.append(f"| SQL ceiling, {name} | {run['jobs_per_s']:,} jobs/s | |")
for name in ("pgqueuer", "procrastinate"):
    if name in peers:
        extra = f" (batch {peers[name]['batch_size']})" if "batch_size" in peers[name] else ""
        lines.append(f"| {name}{extra} | {peers[name]['jobs_per_s']:,} jobs/s | |")
pq = results.get("pgqueuer_latency")
for rate, run in results.get("latency", {}).items():
    beside = f"pgqueuer at {pq['rate']}/s: p50 {pq['p50_ms']}, p95 {pq['p95_ms']}, p99 {pq['p99_ms']} ms" if pq and rate == str(pq["rate"]) else ""
    producers = f", {run['producers']} producer{'s' if run['producers'] > 1 else ''}" if "producers" in run else ""
    achieved = f" ({run['achieved_per_s']:,} achieved{producers})" if "achieved_per_s" in run else ""
    lines.append(f"| enqueue to dispatch at {rate} jobs/s{achieved} | p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms, p99 {run['p99_ms']} ms | {beside} |")
backlog = results.get("backlog", {})
smallest = next(iter(backlog.values()), {})
for label, run in backlog.items():
    lines.append(f"| backlog {label} | {run['jobs_per_s']:,} jobs/s over the window (runs: {run['runs_jobs_per_s']}); "
                 f"{run['first_jobs_per_s']:,} over its first {run['first_jobs']:,} jobs (runs: {run['runs_first_jobs_per_s']}) | "
                 f"{100 * run['first_jobs_per_s'] / smallest['first_jobs_per_s']:.0f}% of the smallest backlog over the same "
                 f"{run['first_jobs']:,} jobs; {100 * run['jobs_per_s'] / smallest['jobs_per_s']:.0f}% over the window |")
if "drain" in results and "1" in drain:
    lines.append(f"| peak RSS, 1 worker (with the in-process simulator's memory) | {drain['1']['peak_rss_mb']} MB | |")
if "drain_http" in results:
    lines.append(f"| peak RSS, 1 worker alone (simulator in its own process) | {results['drain_http']['peak_rss_mb']} MB | |")
if results.get("bloat"):
    sizes = " → ".join(f"{c['jobs_mb']:.0f}" for c in results["bloat"])
    events = " → ".join(f"{c['events_mb']:.0f}" for c in results["bloat"])
    lines.append(f"| jobs table + indexes after each cycle through, pruning on | {sizes} MB | events: {events} MB |")
if "redis" in results:
    r = results["redis"]
    lines.append(f"| Redis gate cost (200 sessions x 50) | {r['overhead_pct']:+.1f}% drain time (median {r['median_without_s']:.3f} s → {r['median_with_s']:.3f} s) | |")
    if "drain_with_redis" in r:
        lines.append(f"| drain, 1 worker, with Redis | {r['drain_with_redis']['jobs_per_s']:,} jobs/s | |")
table = "\n".join(line for line in lines if line)
with open(sys.argv[2].rsplit("/", 1)[0] + "/results.md", "w") as f:
    f.write(table + "\n")
print(table)
