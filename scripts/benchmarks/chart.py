#!/usr/bin/env python3
"""Draws benchmarks/chart.png from results.json: drain throughput beside the peers and the SQL
ceiling, enqueue-to-dispatch latency, and table sizes under sustained load with pruning."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.load(open(sys.argv[1]))
figure, (throughput, latency, bloat) = plt.subplots(1, 3, figsize=(16, 5))

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
throughput.set_xticks(range(len(bars)), list(bars.keys()), fontsize=7)
throughput.set_ylabel("jobs/s (durable commits)")
throughput.set_title("Drain throughput, same server")
for i, value in enumerate(bars.values()):
    throughput.text(i, value, f"{value:,}", ha="center", va="bottom", fontsize=7)

rows = [(f"wa-outbox\n{rate}/s", run) for rate, run in results.get("latency", {}).items()]
if "pgqueuer_latency" in peers:
    rows.append((f"pgqueuer\n{peers['pgqueuer_latency']['rate']}/s", peers["pgqueuer_latency"]))
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
