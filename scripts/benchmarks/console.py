#!/usr/bin/env python3
"""The operator console's pages with a million jobs in the table, run by harness.py (scenario
`console`) with its environment.

Loads, with generate_series, N jobs (BENCH_CONSOLE_JOBS, default 1,000,000; 20,000 with --quick) made over
the last 7 days in 200 sessions of 10 organizations, 20 chats each: the newest 4% queued (in their
lanes), 1% failed (three error codes), 0.5% canceled, spread over organizations, the rest succeeded; two events per finished
job (queued and its final one), one per queued job; 4 live workers. Then starts `wa-outbox api`,
logs in (the operator token, and an org-scoped API key with `operate`) and times each page with
repeated GETs, one at a time. Prints the figures and, as its last line, JSON for results.json.
Measures; asserts nothing.
"""
import http.client
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.parse

from common import free_port, log, psql
from stats import percentile

BIN = os.environ["WA_BIN"]
DB = os.environ["DATABASE_URL"]
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = 20_000 if QUICK else int(os.environ.get("BENCH_CONSOLE_JOBS", "1000000"))
REPEATS = 3 if QUICK else 30
TOKEN = "bench-console-token-0123456789"
WORK = tempfile.mkdtemp(prefix="wa-bench-console-")


def load():
    queued, failed, canceled = N * 4 // 100, N // 100, N // 200
    started = time.monotonic()
    psql(f"""
        TRUNCATE wa_outbox.jobs, wa_outbox.lanes, wa_outbox.events, wa_outbox.workers, wa_outbox.audit, wa_outbox.console_logins;
        DELETE FROM wa_outbox.api_keys;
        DELETE FROM wa_outbox.sessions;
        INSERT INTO wa_outbox.sessions (id, org, engine, max_in_flight, engine_status, status_checked_at)
        SELECT 's' || g, 'org' || (g % 10), 'sim', 4, 'connected', now() - interval '20 seconds' FROM generate_series(0, 199) g;
        -- Job g was made at now() - 7 days * (N - g) / N; the newest are queued, the rest finished.
        INSERT INTO wa_outbox.jobs (org, session_id, chat, kind, state, wa_message_id, payload, deadline, attempts,
                                    error_code, error_message, created_at, run_at, available_at, finished_at, sent_at)
        SELECT 'org' || (g % 200 % 10), 's' || (g % 200), c.chat, 'send', s.state,
               '3EB0' || lpad(upper(to_hex(g)), 18, '0'),
               jsonb_build_object('type', 'text', 'chat', c.chat, 'text', 'bench ' || g), t.at + interval '1 day', 1,
               CASE s.state WHEN 'failed' THEN (ARRAY['engine_error', 'invalid_recipient', 'timeout'])[g % 3 + 1]
                            WHEN 'canceled' THEN 'canceled' END,
               CASE WHEN s.state IN ('failed', 'canceled') THEN 'bench' END,
               t.at, t.at, t.at, CASE WHEN s.state <> 'queued' THEN t.at + interval '2 seconds' END,
               CASE WHEN s.state = 'succeeded' THEN t.at + interval '1 second' END
        FROM generate_series(0, {N} - 1) g
        CROSS JOIN LATERAL (SELECT now() - interval '7 days' * ({N} - g)::float8 / {N} AS at) t
        CROSS JOIN LATERAL (SELECT (4915100000000 + (g / 200) % 20)::text || '@s.whatsapp.net' AS chat) c
        CROSS JOIN LATERAL (SELECT CASE WHEN g >= {N} - {queued} THEN 'queued'
                                        WHEN g % 101 = 7 THEN 'failed'
                                        WHEN g % 211 = 11 THEN 'canceled'
                                        ELSE 'succeeded' END AS state) s;
        INSERT INTO wa_outbox.lanes (session_id, chat, org, pending, busy, ready_at)
        SELECT session_id, chat, min(org), count(*), false, now() FROM wa_outbox.jobs WHERE state = 'queued' GROUP BY 1, 2;
        INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status, attempt, error_code, created_at)
        SELECT org, session_id, id, wa_message_id, 'send', 'queued', 0, NULL, created_at FROM wa_outbox.jobs
        UNION ALL
        SELECT org, session_id, id, wa_message_id, 'send', CASE state WHEN 'succeeded' THEN 'sent' ELSE state END, 1, error_code, finished_at
        FROM wa_outbox.jobs WHERE finished_at IS NOT NULL
        ORDER BY 9;
        INSERT INTO wa_outbox.workers (id, name, host, pid, lease_expires_at, in_flight)
        SELECT gen_random_uuid(), 'worker-' || g, 'bench', 1000 + g, now() + interval '1 hour', g FROM generate_series(1, 4) g;
        VACUUM ANALYZE;
        CHECKPOINT;
    """)
    counts = dict(line.split("|") for line in psql("SELECT state, count(*) FROM wa_outbox.jobs GROUP BY 1").splitlines())
    events = int(psql("SELECT count(*) FROM wa_outbox.events"))
    log(f"  loaded {N:,} jobs {counts}, {events:,} events in {time.monotonic() - started:.0f} s")
    return counts, events


def request(port, method, path, body=None, cookie=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = "wa_console=" + cookie
    connection.request(method, path, body=urllib.parse.urlencode(body) if body else None, headers=headers)
    response = connection.getresponse()
    text = response.read()
    connection.close()
    return response.status, response.getheader("Set-Cookie") or "", text


def login(port, token, name):
    status, cookie, _ = request(port, "POST", "/console/login", {"token": token, "operator": name})
    assert status == 303, f"login answered {status}"
    return re.match(r"wa_console=([0-9a-f]+)", cookie).group(1)


def timed(port, cookie, path):
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        status, _, body = request(port, "GET", path, cookie=cookie)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]}")
    return {"p50_ms": round(percentile(times, 50), 1), "p90_ms": round(percentile(times, 90), 1), "max_ms": round(max(times), 1),
            "bytes": len(body)}


def main():
    counts, events = load()
    key = subprocess.run([BIN, "apikeys", "create", "--database-url", DB, "--org", "org3", "--name", "bench", "--permissions", "operate"],
                         capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    stderr = open(os.path.join(WORK, "api.log"), "w+")
    api = subprocess.Popen([BIN, "api", "--database-url", DB, "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off", "--no-limits"],
                           env=dict(os.environ, WA_OUTBOX_ADMIN_TOKEN=TOKEN, WA_OUTBOX_LOG_LEVEL="warning"),
                           stderr=stderr, stdout=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                request(port, "GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        admin = login(port, TOKEN, "bench")
        scoped = login(port, key, "")
        middle = int(psql(f"SELECT id FROM wa_outbox.jobs ORDER BY id OFFSET {N // 2} LIMIT 1"))
        failed = int(psql("SELECT max(id) FROM wa_outbox.jobs WHERE state = 'failed'"))
        head = psql("SELECT tx::text || '.' || id FROM wa_outbox.events_head()")
        pages = [
            ("overview", "/console", admin), ("overview, org-scoped", "/console", scoped),
            ("overview refresh", "/console/overview/fragment", admin),
            ("sessions", "/console/sessions", admin),
            ("jobs", "/console/jobs", admin), ("jobs, org-scoped", "/console/jobs", scoped),
            ("jobs, state=failed", "/console/jobs?state=failed", admin),
            ("jobs, session", "/console/jobs?session=s17", admin),
            ("jobs, chat", "/console/jobs?chat=4915100000003%40s.whatsapp.net", admin),
            ("jobs, kind+time", "/console/jobs?kind=send&created_after=2020-01-01T00%3A00", admin),
            ("jobs, page by key (middle)", f"/console/jobs?before={middle}", admin),
            ("job", f"/console/jobs/{failed}", admin),
            ("failures", "/console/failures", admin), ("failures, org-scoped", "/console/failures", scoped),
            ("failures, one group", "/console/failures?state=failed&org=org7&error_code=timeout&session=s7", admin),
            ("stream", "/console/stream", admin),
            ("stream poll", f"/console/stream/events?cursor={head}", admin),
        ]
        results = {}
        for name, path, cookie in pages:
            results[name] = timed(port, cookie, path)
            figures = results[name]
            log(f"  {name:30} p50 {figures['p50_ms']:7.1f} ms  p90 {figures['p90_ms']:7.1f} ms  max {figures['max_ms']:7.1f} ms  ({figures['bytes']:,} bytes)")
    finally:
        api.terminate()
        api.wait(timeout=30)
    print(json.dumps({"jobs": N, "by_state": counts, "events": events, "repeats": REPEATS, "pages": results}))


if __name__ == "__main__":
    main()
