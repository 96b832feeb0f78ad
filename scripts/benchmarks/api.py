#!/usr/bin/env python3
"""The gateway API's figures, run by harness.py (scenario `api`) with its environment:

  sync:  synchronous sends through `wa-outbox api` at a fixed 100 requests/s (open loop: each
         request's latency counts from when it was due, so a stall is not hidden by sending
         later), with one worker and the simulator over HTTP in wuzapi's dialect with no added
         latency (an engine server, so the API dispatches the sends itself: DirectDispatch).
         Beside it, the engine call alone: wa_outbox_dispatch_duration_seconds of the API and
         the worker for the same sends.
  async: `?async=true` sends accepted per second by wrk at 64 connections, no worker running, so
         the API's own cost is measured (each accepted send is a durable commit).

Prints its figures and, as its last line, JSON for results.json. Measures; asserts nothing.
"""
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
import time

from common import free_port, log, psql
from stats import percentile

BIN = os.environ["WA_BIN"]
DB = os.environ["DATABASE_URL"]
REDIS = os.environ["BENCH_REDIS_URL"]
QUICK = os.environ.get("BENCH_QUICK") == "1"
SESSIONS = 100
WORK = tempfile.mkdtemp(prefix="wa-bench-api-")
UNLIMITED = ["--rate-per-second", "1000000", "--burst", "1000000", "--pacing", "off"]


def start(name, args):
    env = dict(os.environ, DATABASE_URL=DB, REDIS_URL=REDIS, WA_OUTBOX_LOG_LEVEL="warning")
    stderr = open(os.path.join(WORK, f"{name}.log"), "w+")
    return subprocess.Popen([BIN] + args, env=env, stderr=stderr, stdout=subprocess.DEVNULL)


def stop(process):
    process.terminate()
    process.wait(timeout=30)


def wait_for(port, path="/healthz"):
    for _ in range(300):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def reset(engine_url=None):
    engine, url = ("wuzapi", f"'{engine_url}'") if engine_url else ("sim", "NULL")
    psql(f"""
        TRUNCATE wa_outbox.jobs, wa_outbox.lanes, wa_outbox.events, wa_outbox.workers, wa_outbox.audit;
        DELETE FROM wa_outbox.sessions;
        INSERT INTO wa_outbox.sessions (id, org, engine, engine_url, max_in_flight)
        SELECT 's' || g, 'org1', '{engine}', {url}, 8 FROM generate_series(1, {SESSIONS}) g;
        VACUUM ANALYZE;
        CHECKPOINT;
    """)
    env = dict(os.environ, DATABASE_URL=DB)
    return subprocess.run([BIN, "apikeys", "create", "--org", "org1", "--name", f"bench{time.time_ns()}", "--permissions", "send,read"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def body(n):
    return json.dumps({"type": "text", "chat": f"49{n:011d}@s.whatsapp.net", "text": "bench"})


def scrape_dispatch(*ports):
    """The mean engine call of the processes' dispatches, in ms, from their histograms' sums and counts."""
    total = count = 0.0
    for port in ports:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        for line in connection.getresponse().read().decode().splitlines():
            if line.startswith("wa_outbox_dispatch_duration_seconds_sum"):
                total += float(line.split()[-1])
            elif line.startswith("wa_outbox_dispatch_duration_seconds_count"):
                count += float(line.split()[-1])
    return (total / count * 1000 if count else 0.0), int(count)


def sync_run(rate=100, seconds=30):
    sim_port, api_port, api_metrics_port, admin_port = free_port(), free_port(), free_port(), free_port()
    simulator = start("simulator", ["simulator", "--listen", f"127.0.0.1:{sim_port}"])
    wait_for(sim_port, "/sim/stats")
    key = reset(engine_url=f"http://127.0.0.1:{sim_port}")
    api = start("api", ["api", "--listen", f"127.0.0.1:{api_port}", "--metrics-listen", f"127.0.0.1:{api_metrics_port}",
                        "--redis-url", REDIS] + UNLIMITED)
    worker = start("worker", ["worker", "--name", "w", "--redis-url", REDIS, "--admin-listen", f"127.0.0.1:{admin_port}",
                              "--poll-interval-ms", "100"] + UNLIMITED)
    wait_for(api_port, "/openapi.json")
    wait_for(admin_port)
    total = rate * seconds
    due0 = time.monotonic() + 0.5
    latencies, statuses, lock, next_index = [], {}, threading.Lock(), [0]

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", api_port, timeout=60)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= total:
                return
            due = due0 + i / rate
            time.sleep(max(0.0, due - time.monotonic()))
            connection.request("POST", f"/api/v1/sessions/s{i % SESSIONS + 1}/messages", body(i), headers)
            response = connection.getresponse()
            response.read()
            done = time.monotonic()
            with lock:
                latencies.append((done - due) * 1000)
                statuses[response.status] = statuses.get(response.status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine_ms, dispatches = scrape_dispatch(api_metrics_port, admin_port)
    _, by_api = scrape_dispatch(api_metrics_port)
    stop(api)
    stop(worker)
    stop(simulator)
    return {"rate_per_s": rate, "requests": len(latencies), "statuses": statuses,
            "p50_ms": round(percentile(latencies, 50), 2), "p90_ms": round(percentile(latencies, 90), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "max_ms": round(max(latencies), 2),
            "engine_call_mean_ms": round(engine_ms, 3), "dispatches": dispatches, "dispatched_by_api": by_api}


WRK_SCRIPT = """
local thread_count = 0
setup = function(thread)
    thread:set("tid", thread_count)
    thread_count = thread_count + 1
end
local counter = 0
request = function()
    counter = counter + 1
    local n = tid * 1000000000 + counter
    local body = '{"type":"text","chat":"49' .. string.format("%011d", n) .. '@s.whatsapp.net","text":"bench"}'
    return wrk.format("POST", "/api/v1/sessions/s" .. (n % SESSIONS + 1) .. "/messages?async=true",
        {["Authorization"] = "Bearer KEY", ["Content-Type"] = "application/json"}, body)
end
"""


def async_run(seconds=30, connections=64):
    key = reset()
    api_port = free_port()
    api = start("api-async", ["api", "--listen", f"127.0.0.1:{api_port}", "--redis-url", REDIS] + UNLIMITED)
    wait_for(api_port, "/openapi.json")
    script = os.path.join(WORK, "async.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT.replace("SESSIONS", str(SESSIONS)).replace("KEY", key))
    done = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script,
                           f"http://127.0.0.1:{api_port}"], capture_output=True, text=True, check=True)
    stop(api)
    out = done.stdout
    log(out)

    def latency(label):
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return round(value * {"us": 0.001, "ms": 1, "s": 1000}[unit], 2)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    accepted = int(psql("SELECT count(*) FROM wa_outbox.jobs"))
    return {"connections": connections, "seconds": seconds,
            "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
            "p50_ms": latency(50), "p90_ms": latency(90), "p99_ms": latency(99),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0, "jobs_queued": accepted}


def main():
    seconds = 3 if QUICK else 30
    sync = sync_run(seconds=seconds)
    log(f"  sync at {sync['rate_per_s']}/s: p50 {sync['p50_ms']} ms, p90 {sync['p90_ms']} ms, p99 {sync['p99_ms']} ms, "
        f"max {sync['max_ms']} ms over {sync['requests']} requests {sync['statuses']}; "
        f"engine call alone: mean {sync['engine_call_mean_ms']} ms over {sync['dispatches']} dispatches "
        f"({sync['dispatched_by_api']} by the API)")
    accepted = async_run(seconds=seconds)
    log(f"  async, wrk at {accepted['connections']} connections: {accepted['requests_per_s']} requests/s, "
        f"p50 {accepted['p50_ms']} ms, p90 {accepted['p90_ms']} ms, p99 {accepted['p99_ms']} ms, "
        f"{accepted['non_2xx']} not 2xx, {accepted['jobs_queued']} jobs queued")
    print(json.dumps({"sync": sync, "async": accepted}))


if __name__ == "__main__":
    main()
