"""The mixed workload, through the gateway API as clients use it: sends of every type, async and
sync, edits and revokes, across organizations and sessions, with a hot chat; every request carries
an Idempotency-Key and is retried with it (on another API process) until it has an answer, as a
client whose API process died mid-request does. Some sends are retried on purpose after their answer.

`accepted` maps each outbox id to what was asked; `findings` lists what should never happen
(a 4xx for a valid request, an idempotent retry answered with another job, no answer in time).
"""
import http.client
import json
import random
import threading
import time

ORGS = ["org1", "org2", "org3"]
DIALECTS = ["wuzapi", "waha"]
SESSIONS_PER_DIALECT = 2
CHATS = 20
HOT = ("org1-wuzapi-0", "4915100000000@s.whatsapp.net")


def sessions():
    """(org, session id, dialect) of every session."""
    return [(org, f"{org}-{dialect}-{i}", dialect) for org in ORGS for dialect in DIALECTS for i in range(SESSIONS_PER_DIALECT)]


class Workload:
    def __init__(self, ports, keys, log=print, seed=1):
        self.ports = ports  # a callable: the API ports now
        self.keys = keys  # org -> API key
        self.log = log
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.next_n = 0
        self.accepted = {}  # outbox id -> dict
        self.findings = []
        self.counts = {"requests": 0, "retried_requests": 0, "replays_checked": 0, "sync": 0, "edits": 0, "revokes": 0}
        self.statuses = {}
        self.followups = []  # (due, kind, job) edits and revokes to make
        self.stop = threading.Event()
        self.sessions = sessions()

    # -- one request, until it has an answer ---------------------------------------------------

    def request(self, org, method, path, body, key, deadline_s=180):
        headers = {"Authorization": f"Bearer {self.keys[org]}", "Content-Type": "application/json", "Idempotency-Key": key}
        deadline = time.monotonic() + deadline_s
        attempt = 0
        while time.monotonic() < deadline:
            ports = self.ports()
            port = ports[(hash(key) + attempt) % len(ports)]
            attempt += 1
            with self.lock:
                self.counts["requests"] += 1
                if attempt > 1:
                    self.counts["retried_requests"] += 1
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request(method, path, json.dumps(body), headers)
                response = connection.getresponse()
                status, text = response.status, response.read().decode()
                connection.close()
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
                continue
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if status in (200, 202):
                return status, json.loads(text)
            if status in (409, 429) or status >= 500:
                time.sleep(0.2 if status != 429 else 0.5)
                continue
            return status, text
        return None, "no answer"

    # -- sends -------------------------------------------------------------------------------------

    def body(self, n, chat):
        kind = self.random.random()
        if kind < 0.7:
            return "text", {"type": "text", "chat": chat, "text": f"chaos message {n}"}
        if kind < 0.8:
            return "poll", {"type": "poll", "chat": chat, "name": f"chaos poll {n}", "options": ["yes", "no", f"maybe {n}"]}
        if kind < 0.9:
            return "location", {"type": "location", "chat": chat, "latitude": 52.52, "longitude": 13.405, "name": f"chaos place {n}"}
        return "contact", {"type": "contact", "chat": chat, "contacts": [{"name": f"chaos contact {n}", "phone": "+4930123456"}]}

    def one_send(self):
        with self.lock:
            n = self.next_n
            self.next_n += 1
            r = self.random.random()
            if r < 0.1:
                org, session = "org1", HOT[0]
                chat = HOT[1]
            else:
                org, session, _ = self.random.choice(self.sessions)
                chat = f"{4915100000001 + self.random.randrange(CHATS)}@s.whatsapp.net"
            kind, body = self.body(n, chat)
            sync = self.random.random() < 0.05
            replay = self.random.random() < 0.05
            followup = self.random.random()
        key = f"send-{n}"
        path = f"/api/v1/sessions/{session}/messages" + ("" if sync else "?async=true")
        asked = time.monotonic()
        status, answer = self.request(org, "POST", path, body, key)
        answered = time.monotonic()
        if status not in (200, 202):
            self.finding(f"send {key} to {session}: {status} {str(answer)[:300]}")
            return
        job = {"org": org, "session": session, "chat": chat, "kind": "send", "type": kind, "key": key,
               "outbox": answer["outboxId"], "wa": answer.get("waMessageId"), "sync": sync, "asked": asked, "answered": answered}
        self.record(job)
        if sync:
            with self.lock:
                self.counts["sync"] += 1
        if replay:
            again, second = self.request(org, "POST", path, body, key)
            with self.lock:
                self.counts["replays_checked"] += 1
            if again not in (200, 202) or second.get("outboxId") != job["outbox"]:
                self.finding(f"idempotent retry of {key} answered {again} {str(second)[:200]}, first was outbox {job['outbox']}")
        if followup < 0.03 and kind == "text":
            self.later("edit", job)
        elif 0.03 <= followup < 0.05:
            self.later("revoke", job)

    def later(self, kind, job):
        with self.lock:
            self.followups.append((time.monotonic() + self.random.uniform(0.5, 3), kind, job))

    def one_followup(self):
        with self.lock:
            due = [f for f in self.followups if f[0] <= time.monotonic()]
            if not due:
                return False
            item = due[0]
            self.followups.remove(item)
        _, kind, job = item
        key = f"{kind}-{job['key']}"
        path = f"/api/v1/sessions/{job['session']}/messages/{job['wa']}"
        if kind == "edit":
            status, answer = self.request(job["org"], "PATCH", path, {"chat": job["chat"], "text": f"edited {job['key']}"}, key)
        else:
            status, answer = self.request(job["org"], "DELETE", path, {"chat": job["chat"]}, key)
        if status not in (200, 202):
            self.finding(f"{kind} {key}: {status} {str(answer)[:300]}")
            return True
        with self.lock:
            self.counts[kind + "s"] += 1
        self.record({"org": job["org"], "session": job["session"], "chat": job["chat"], "kind": kind, "type": None, "key": key,
                     "outbox": answer["outboxId"], "wa": job["wa"], "sync": True, "target": job["outbox"]})
        return True

    def record(self, job):
        with self.lock:
            previous = self.accepted.get(job["outbox"])
            if previous and previous["key"] != job["key"]:
                self.findings.append(f"outbox {job['outbox']} answered for {previous['key']} and {job['key']}")
            self.accepted[job["outbox"]] = job

    def finding(self, text):
        with self.lock:
            self.findings.append(text)
        self.log(f"  finding: {text}")

    # -- the producers -----------------------------------------------------------------------------

    def run(self, threads, jobs, until):
        """Sends until `jobs` sends are accepted or `until` (monotonic) passes; then makes the
        edits and revokes still due."""
        def producer():
            while not self.stop.is_set() and time.monotonic() < until:
                with self.lock:
                    if self.next_n >= jobs:
                        break
                if not self.one_followup():
                    self.one_send()
            while self.one_followup() or self.pending_followups():
                time.sleep(0.05)

        workers = [threading.Thread(target=producer, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        return workers

    def pending_followups(self):
        with self.lock:
            return bool(self.followups)

    def sends(self):
        with self.lock:
            return sum(1 for j in self.accepted.values() if j["kind"] == "send")
