"""The end-of-run checks, against what the clients were told, the database, Redis, the simulators'
delivery logs and each organization's event stream. Each check is a row: what, the figure, and
whether it holds. A row marked `fatal` makes the run exit non-zero when it does not hold.
"""
import json
import re
import subprocess
import time
from collections import Counter, defaultdict

FINAL = {"succeeded", "failed", "canceled"}
FINAL_EVENTS = {"sent", "edited", "revoked", "failed", "canceled"}


def deliveries(path):
    """The simulator's delivery log, in delivery order: [(index, record)]."""
    with open(path) as f:
        return [(i, json.loads(line)) for i, line in enumerate(f) if line.strip()]


def engine_key(engine_id, delivered):
    """The simulator's id inside WAHA's serialized id (true_<chat>_<id>), or the id itself."""
    if engine_id is None:
        return None
    if engine_id in delivered:
        return engine_id
    parts = engine_id.split("_")
    return parts[2] if len(parts) >= 3 else engine_id


class Checks:
    def __init__(self, cluster, workload, streams, faults):
        self.cluster, self.workload, self.streams, self.faults = cluster, workload, streams, faults
        self.rows = []

    def row(self, what, figure, ok, fatal=True):
        self.rows.append((what, figure, ok, fatal))

    def jobs(self):
        out = self.cluster.psql(
            "SELECT id, org, session_id, chat, kind, state, attempts, max_attempts, coalesce(error_code, ''), wa_message_id, "
            "coalesce(engine_message_id, ''), extract(epoch FROM run_at), maybe_sent FROM wa_outbox.jobs")
        jobs = {}
        for line in out.splitlines():
            f = line.split("|")
            jobs[f[0]] = {"id": int(f[0]), "org": f[1], "session": f[2], "chat": f[3], "kind": f[4], "state": f[5],
                          "attempts": int(f[6]), "max_attempts": int(f[7]), "error": f[8], "wa": f[9], "engine": f[10] or None,
                          "run_at": float(f[11]), "maybe_sent": f[12] == "t"}
        return jobs

    def run(self):
        jobs = self.jobs()
        accepted = self.workload.accepted
        # 1. Every accepted request is a job, and every job is final.
        unknown = [o for o in accepted if o not in jobs]
        not_final = [j["id"] for j in jobs.values() if j["state"] not in FINAL]
        self.row("accepted requests (202/200) that are jobs", f"{len(accepted) - len(unknown):,} of {len(accepted):,}", not unknown)
        self.row("jobs final (succeeded, failed, canceled)", f"{len(jobs) - len(not_final):,} of {len(jobs):,}"
                 + (f"; not final: {not_final[:10]}" if not_final else ""), not not_final)
        states = Counter((j["kind"], j["state"]) for j in jobs.values())
        self.row("jobs by kind and state", ", ".join(f"{k} {s} {n:,}" for (k, s), n in sorted(states.items())), True, fatal=False)
        failed = Counter(j["error"] for j in jobs.values() if j["state"] == "failed")
        self.row("failed jobs by error", ", ".join(f"{e or '-'} {n}" for e, n in failed.most_common()) or "none", True, fatal=False)

        # 2. Deliveries: each succeeded send delivered once; nothing delivered twice; chat order kept.
        # /sim/stats first: it flushes the delivery log.
        twice = {d: self.cluster.sim_stats(d)["deliveredTwice"] for d in self.cluster.simulators}
        by_dialect = {d: deliveries(s["log"]) for d, s in self.cluster.simulators.items()}
        dialect_of = {s: d for _, s, d in self.workload.sessions}
        sends = [j for j in jobs.values() if j["kind"] == "send"]
        missing, duplicated, unowned, failed_delivered = [], [], [], []
        first_position = {}
        for dialect, log in by_dialect.items():
            count = Counter(r["id"] for _, r in log if r["kind"] == "send")
            duplicated += [i for i, n in count.items() if n > 1]
            owner = {}
            for job in sends:
                if dialect_of.get(job["session"]) != dialect:
                    continue
                key = job["wa"] if dialect == "wuzapi" else engine_key(job["engine"], count)
                if key:
                    owner[key] = job
                delivered = key is not None and key in count
                if job["state"] == "succeeded" and not delivered:
                    missing.append(job["id"])
                if job["state"] == "failed" and delivered:
                    failed_delivered.append(job["id"])
            for index, record in log:
                if record["kind"] != "send":
                    continue
                job = owner.get(record["id"])
                if job is None:
                    unowned.append((dialect, record["id"], record["session"], record["chat"], self.near(record["time"])))
                elif job["id"] not in first_position:
                    first_position[job["id"]] = (dialect, index)
        self.row("succeeded sends missing from the delivery logs (lost)", f"{len(missing)}" + (f": jobs {missing[:10]}" if missing else ""),
                 not missing)
        self.row("ids delivered more than once", f"{len(duplicated)}" + (f": {duplicated[:5]}" if duplicated else ""), not duplicated)
        self.row("content delivered twice (simulator's count, per dialect)", ", ".join(f"{d} {n}" for d, n in twice.items()),
                 sum(twice.values()) == 0)
        self.row("deliveries no job owns (a second copy under a new WAHA id)", f"{len(unowned)}"
                 + (f": {unowned[:3]}" if unowned else ""), not unowned)
        self.explained = [self.explain(u, jobs) for u in unowned[:5]]
        self.row("failed sends that were delivered (maybe sent, attempts exhausted)", f"{len(failed_delivered)}",
                 not failed_delivered, fatal=False)
        self.row("sends delivered", f"{len(first_position):,}", True, fatal=False)
        violations, inversions = self.order(sends, first_position)
        self.row("chat order violations (delivered before a send of its chat answered before it was asked)", f"{len(violations)}"
                 + (f": {violations[:3]}" if violations else ""), not violations)
        self.row("(run_at, id) inversions in delivery order (requests in flight together)", f"{inversions}", True, fatal=False)
        over = [j["id"] for j in jobs.values() if j["attempts"] > j["max_attempts"]]
        most = max((j["attempts"] for j in jobs.values()), default=0)
        self.row("attempts within max_attempts", f"over: {len(over)}; most attempts of one job: {most}", not over)
        return jobs

    def order(self, sends, first_position):
        """Chat order as a client sees it: a send whose 202/200 came back before another send to
        the same chat was even asked for must be delivered first. (Two requests in flight at once
        have no order between them: each enqueue's run_at is its transaction's start, so the one
        that commits second may sort first, after the other was already dispatched.) Returns the
        violations, and separately the pairs delivered against (run_at, id), for information."""
        lanes = defaultdict(list)
        for job in sends:
            if job["id"] in first_position:
                lanes[(job["session"], job["chat"])].append(job)
        violations, inversions = [], 0
        for lane, lane_jobs in lanes.items():
            by_delivery = sorted(lane_jobs, key=lambda j: first_position[j["id"]][1])
            # From the last delivered back: the earliest answer among those delivered later.
            earliest_later = None
            for job in reversed(by_delivery):
                asked = self.client(job, "asked")
                if earliest_later is not None and asked is not None and earliest_later[0] < asked:
                    violations.append(f"{lane[0]} {lane[1]}: job {job['id']} delivered before job {earliest_later[1]}, "
                                      f"which was answered {asked - earliest_later[0]:.3f} s before job {job['id']} was asked for")
                answered = self.client(job, "answered")
                if answered is not None and (earliest_later is None or answered < earliest_later[0]):
                    earliest_later = (answered, job["id"])
            latest = None
            for job in by_delivery:
                key = (job["run_at"], job["id"])
                if latest is not None and key < latest:
                    inversions += 1
                latest = key if latest is None or key > latest else latest
        return violations, inversions

    def explain(self, unowned, jobs):
        """Which job a WAHA copy no job owns belongs to (its content, from the simulator's chat
        listing, names the request), and that job's events: the evidence for a duplicate."""
        dialect, message_id, session, chat, _ = unowned
        import http.client
        connection = http.client.HTTPConnection("127.0.0.1", self.cluster.simulators[dialect]["port"], timeout=30)
        connection.request("GET", f"/api/{session}/chats/{chat.split('@')[0]}@c.us/messages?limit=1000000")
        listed = json.loads(connection.getresponse().read())
        content = next((m.get("body") or json.dumps(m.get("location") or m.get("vCards")) for m in listed if m["id"].endswith(message_id)), None)
        key = None
        for job in self.workload.accepted.values():
            marker = job["key"].split("-", 1)[1]
            if job["kind"] == "send" and job["session"] == session and job["chat"] == chat and content \
                    and re.search(rf" {marker}(?!\d)", content):
                key = job
        lines = [f"copy {message_id} in {session} {chat}: content {content!r}; request {key['key'] if key else '?'}"]
        if key:
            job = jobs.get(key["outbox"], {})
            lines.append(f"  job {key['outbox']}: state {job.get('state')}, attempts {job.get('attempts')}, maybe_sent {job.get('maybe_sent')}, "
                         f"engine id {job.get('engine')}")
            lines += ["  " + line for line in self.cluster.psql(
                "SELECT to_char(created_at, 'HH24:MI:SS.MS'), status, attempt, coalesce(error_code, ''), left(coalesce(error_message, ''), 120) "
                f"FROM wa_outbox.events WHERE job_id = {int(key['outbox'])} ORDER BY id").splitlines()]
            for dialect_log in (self.cluster.simulators[dialect]["log"],):
                for _, record in deliveries(dialect_log):
                    if record["session"] == session and record["chat"] == chat and record["id"] in (message_id, engine_key(job.get("engine"), {record["id"]})):
                        lines.append(f"  delivered {record['id']} at {time.strftime('%H:%M:%S', time.localtime(record['time']))}"
                                     f"{record['time'] % 1:.3f}"[1:] + f" ({', '.join(self.near(record['time'])) or 'no fault near'})")
        return "\n".join(lines)

    def near(self, when):
        """The faults that were on, or had ended within 20 s, when something happened."""
        return [f"{i['fault']} {when - i['start']:+.1f} s after its start" for i in self.faults.injections
                if i["start"] - 2 <= when <= i["end"] + 20]

    def client(self, job, field):
        accepted = self.workload.accepted.get(str(job["id"]))
        return accepted.get(field) if accepted else None

    def leftovers(self, redis_cli, settle_s):
        running = self.cluster.psql("SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE worker_id IS NOT NULL AND state = 'running') FROM wa_outbox.jobs")
        lanes = self.cluster.psql("SELECT count(*) FILTER (WHERE busy), coalesce(sum(pending), 0) FROM wa_outbox.lanes")
        in_flight = self.cluster.psql("SELECT coalesce(sum(in_flight), 0), count(*) FILTER (WHERE state <> 'active') FROM wa_outbox.sessions")
        busy, pending = lanes.split("|")
        flight, inactive = in_flight.split("|")
        self.row("running jobs left", running.split("|")[0], running.split("|")[0] == "0")
        self.row("lanes busy / pending jobs left", f"{busy} / {pending}", busy == "0" and pending == "0")
        self.row("sessions' in_flight left / sessions not active", f"{flight} / {inactive}", flight == "0", fatal=True)
        locks = self.redis_locks(redis_cli)
        self.row(f"Redis dispatch locks left ({settle_s:.0f} s after the last job ended)", f"{len(locks)}"
                 + (f": {locks[:3]}" if locks else ""), not locks)

    @staticmethod
    def redis_locks(redis_cli):
        done = subprocess.run(redis_cli + ["--scan", "--pattern", "*lock:*"], capture_output=True, text=True)
        return [k for k in done.stdout.split() if k]

    def events(self, jobs):
        out = self.cluster.psql(
            "SELECT job_id, count(*) FROM wa_outbox.events WHERE status IN ('sent','edited','revoked','failed','canceled') GROUP BY 1")
        finals = {int(a): int(b) for a, b in (line.split("|") for line in out.splitlines())}
        final_jobs = [j for j in jobs.values() if j["state"] in FINAL]
        none = [j["id"] for j in final_jobs if finals.get(j["id"], 0) == 0]
        many = [j for j, n in finals.items() if n > 1]
        self.row("final jobs with exactly one final event (events table)", f"{len(final_jobs) - len(none) - len(many):,} of {len(final_jobs):,}; "
                 f"none: {len(none)}, more than one: {len(many)}", not none and not many)
        for stream in self.streams:
            self.stream(stream, jobs)

    def stream(self, stream, jobs):
        received = stream.received()
        ids = Counter(e[0] for e in received)
        repeated_ids = [i for i, n in ids.items() if n > 1]
        own = {str(j["id"]) for j in jobs.values() if j["org"] == stream.org}
        foreign = [e for e in received if e[1] not in own]
        terminal = Counter(e[1] for e in received if e[2] in FINAL_EVENTS)
        expected = {str(j["id"]) for j in jobs.values() if j["org"] == stream.org and j["state"] in FINAL}
        missing = [o for o in expected if terminal.get(o, 0) == 0]
        twice = [o for o, n in terminal.items() if n > 1]
        ok = not repeated_ids and not foreign and not missing and not twice
        self.row(f"{stream.org} stream: terminal events exactly once ({stream.connections} connections, Last-Event-ID resumes)",
                 f"{len(expected) - len(missing):,} of {len(expected):,}; missing {len(missing)}, twice {len(twice)}, "
                 f"repeated event ids {len(repeated_ids)}, other orgs' {len(foreign)}", ok)

    def recovery(self):
        times = sorted(r["time"] for d, s in self.cluster.simulators.items() for _, r in deliveries(s["log"]))
        import bisect
        per_fault = defaultdict(list)
        for injection in self.faults.injections:
            i = bisect.bisect_right(times, injection["end"])
            per_fault[injection["fault"]].append(times[i] - injection["end"] if i < len(times) else None)
        return per_fault

    def table(self):
        width = max(len(r[0]) for r in self.rows)
        lines = []
        for what, figure, ok, fatal in self.rows:
            mark = "ok" if ok else ("FAIL" if fatal else "note")
            lines.append(f"| {what.ljust(width)} | {figure} | {mark} |")
        return lines

    def failed(self):
        return [r for r in self.rows if not r[2] and r[3]]
