#!/usr/bin/env python3
"""The chaos run (scripts/chaos starts the servers, builds, and calls this with WA_BIN,
DATABASE_URL, REDIS_URL and CHAOS_WORK): a mixed workload through API and worker processes while
faults are injected (faults.py), then the checks (checks.py) as a table. Exits 1 on any loss,
duplicate, order violation or other failed check; 2 when the run itself could not finish.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checks import Checks  # noqa: E402
from cluster import LEASE_MS, Cluster  # noqa: E402
from faults import ALL, Faults  # noqa: E402
from streams import StreamClient  # noqa: E402
from workload import ORGS, Workload, sessions  # noqa: E402

LOCK_TTL_S = 35


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def arguments():
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000, help="sends to make (the run stops producing at this many)")
    parser.add_argument("--minutes", type=float, default=0, help="stop producing after this long (0: only --jobs counts)")
    parser.add_argument("--faults", default="all", help=f"comma-separated, or all, or none: {','.join(ALL)}")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--clients", type=int, default=24, help="client threads sending requests")
    parser.add_argument("--drain-minutes", type=float, default=15, help="how long the queue may take to drain after production")
    parser.add_argument("--out", default=None, help="folder for results.json and table.md (default: the work folder)")
    args = parser.parse_args()
    chosen = ALL if args.faults == "all" else [] if args.faults == "none" else args.faults.split(",")
    unknown = [f for f in chosen if f not in ALL]
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(ALL)}")
    args.chosen = chosen
    return args


def setup(cluster):
    cluster.psql("SELECT 1")
    cluster.cli("migrate")
    for org, session, dialect in sessions():
        cluster.cli("sessions", "add", "--id", session, "--org", org, "--engine", dialect, "--url", cluster.engine_url(dialect),
                    "--max-in-flight", "4", "--rate-per-second", "100000", "--burst", "100000", "--pacing", "off")
    return {org: cluster.cli("apikeys", "create", "--org", org, "--name", "chaos", "--permissions", "send,read") for org in ORGS}


def progress(cluster, workload, started):
    try:
        row = cluster.psql("SELECT count(*) FILTER (WHERE state IN ('succeeded','failed','canceled')), count(*) FROM wa_outbox.jobs")
        final, total = row.split("|")
    except RuntimeError:
        final, total = "?", "?"
    log(f"  {time.monotonic() - started:6.0f} s  accepted {len(workload.accepted):,}  jobs final {final} of {total}  "
        f"requests {workload.counts['requests']:,} (retried {workload.counts['retried_requests']:,})")
    return final, total


def main():
    args = arguments()
    work = os.environ["CHAOS_WORK"]
    out = args.out or work
    os.makedirs(out, exist_ok=True)
    cluster = Cluster(os.environ["WA_BIN"], work, os.environ["DATABASE_URL"], os.environ["REDIS_URL"],
                      workers=args.workers, apis=args.apis, log=log)
    redis_cli = ["redis-cli", "-p", os.environ["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]]
    log(f"chaos: {args.jobs:,} sends max, {args.minutes or 'no'} minute limit, faults: {', '.join(args.chosen) or 'none'}; "
        f"{args.workers} workers, {args.apis} API processes, lease {LEASE_MS} ms; work folder {work}")
    cluster.start_simulators()
    keys = setup(cluster)
    cluster.start_processes()
    streams = [StreamClient(org, keys[org], cluster.ports, log=log).start() for org in ORGS]
    faults = Faults(cluster, args.chosen, log=log)
    workload = Workload(cluster.ports, keys, log=log)
    exited = []

    started = time.monotonic()
    until = started + args.minutes * 60 if args.minutes else float("inf")
    faults.start()
    producers = workload.run(args.clients, args.jobs, until)
    last = 0.0
    while any(p.is_alive() for p in producers):
        time.sleep(1)
        exited += cluster.check_alive()
        if time.monotonic() - last >= 10:
            progress(cluster, workload, started)
            last = time.monotonic()
    produced_s = time.monotonic() - started
    log(f"production over after {produced_s:.0f} s: {workload.sends():,} sends accepted; stopping the faults")
    faults.finish()
    for proxy in [cluster.pg_proxy, cluster.redis_proxy] + list(cluster.engine_proxies.values()):
        proxy.restore()

    drain_until = time.monotonic() + args.drain_minutes * 60
    while time.monotonic() < drain_until:
        exited += cluster.check_alive()
        final, total = progress(cluster, workload, started)
        if final != "?" and final == total:
            break
        time.sleep(5)
    ended = time.monotonic()
    log(f"queue drained (or drain time over) {ended - started:.0f} s after the start; waiting for the streams")
    expected = {org: {o for o, j in workload.accepted.items() if j["org"] == org} for org in ORGS}
    stream_until = time.monotonic() + 120
    while time.monotonic() < stream_until:
        if all(expected[s.org] <= {e[1] for e in s.received() if e[2] in ("sent", "edited", "revoked", "failed", "canceled")}
               for s in streams):
            break
        time.sleep(2)
    settle_until = time.monotonic() + LOCK_TTL_S + 5
    while time.monotonic() < settle_until and Checks.redis_locks(redis_cli):
        time.sleep(1)
    settle_s = time.monotonic() - ended
    for stream in streams:
        stream.finish()

    checks = Checks(cluster, workload, streams, faults)
    jobs = checks.run()
    checks.leftovers(redis_cli, settle_s)
    checks.events(jobs)
    checks.row("client findings (4xx to a valid request, idempotent retry answered with another job, no answer)",
               f"{len(workload.findings)}" + (f": {workload.findings[:3]}" if workload.findings else ""), not workload.findings)
    checks.row("processes that exited by themselves (replaced)", f"{len(exited)}" + (f": {exited[:3]}" if exited else ""),
               not exited, fatal=False)
    detection = faults.listener_outcomes()
    if detection:
        given_up = [s for kind, s in detection if kind == "given up"]
        still_open = [s for kind, s in detection if kind == "open"]
        checks.row(f"cut LISTEN connections still open {faults.LISTEN_NOTICE_S} s after the cut (half-open, unnoticed)",
                   f"{len(still_open)} of {len(detection)}; given up by their process: {len(given_up)}"
                   + (f" (after {min(given_up):.1f}-{max(given_up):.1f} s)" if given_up else "")
                   + f"; ended by a restart or kill first: {len(detection) - len(given_up) - len(still_open)}", not still_open)
    cluster.stop_all()
    cluster.stop_simulators()
    recovery = checks.recovery()

    lines = ["| check | figure | |", "|---|---|---|"] + checks.table()
    lines += ["", "| fault | injections | recovery: next delivery after the fault ended, median / max |", "|---|---|---|"]
    for fault in args.chosen:
        values = [v for v in recovery.get(fault, []) if v is not None]
        count = len(recovery.get(fault, []))
        figure = f"{sorted(values)[len(values) // 2]:.2f} s / {max(values):.2f} s" if values else "-"
        lines.append(f"| {fault} | {count} | {figure} |")
    summary = (f"{workload.sends():,} sends accepted ({workload.counts['sync']:,} sync), {workload.counts['edits']:,} edits, "
               f"{workload.counts['revokes']:,} revokes, {len(jobs):,} jobs; {workload.counts['requests']:,} requests "
               f"({workload.counts['retried_requests']:,} retried, {workload.counts['replays_checked']:,} idempotent replays checked); "
               f"statuses {dict(sorted(workload.statuses.items()))}; produced in {produced_s:.0f} s, all final after {ended - started:.0f} s")
    print("\n" + summary + "\n\n" + "\n".join(lines), flush=True)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(summary + "\n\n" + "\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"summary": summary, "rows": checks.rows, "injections": faults.injections,
                   "recovery": recovery, "listener_detection": detection}, f, indent=1, default=str)
    for explanation in getattr(checks, "explained", []):
        print("\n" + explanation, flush=True)
    failed = checks.failed()
    if failed:
        print(f"\nchaos: {len(failed)} check(s) failed: " + "; ".join(r[0] for r in failed), flush=True)
        return 1
    print("\nchaos: every check holds", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
