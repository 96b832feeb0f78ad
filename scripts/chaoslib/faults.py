"""The faults, each a loop in a thread of its own, so that `--faults all` runs them together.

Each injection is logged as (fault, start, end, detail) in wall-clock seconds, the simulator's
clock, so recovery (the next delivery after the fault ended) can be read off its delivery logs.
"""
import os
import random
import signal
import threading
import time

from cluster import LEASE_MS, REQUEST_TIMEOUT_MS
from workload import sessions

LEASE = LEASE_MS / 1000
# fault -> (first injection after s, period s): every fault happens at least once in a minute.
SCHEDULE = {
    "kill": (3, 4),
    "pg-restart": (20, 45),
    "pg-terminate": (8, 20),
    "listen-cut": (12, 40),
    "redis-restart": (16, 40),
    "redis-outage": (26, 50),
    "sigstop": (5, 35),
    "engine-delay": (30, 35),
    "disconnect": (6, 12),
    "restrict": (10, 30),
}
ALL = list(SCHEDULE)


class Faults:
    def __init__(self, cluster, chosen, log=print, seed=2):
        self.cluster, self.chosen, self.log = cluster, chosen, log
        self.random = random.Random(seed)
        self.injections = []
        self.cut_listeners = []  # (connection, cut at) of the listen-cut fault
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = []

    def start(self):
        for name in self.chosen:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"fault-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=LEASE * 3 + 30)

    def _loop(self, name):
        first, period = SCHEDULE[name]
        if self.stop.wait(first):
            return
        while not self.stop.is_set():
            start = time.time()
            try:
                detail = getattr(self, "_" + name.replace("-", "_"))()
            except Exception as error:  # a fault that could not be injected is reported, not fatal
                detail = f"injection failed: {error}"
            with self.lock:
                self.injections.append({"fault": name, "start": start, "end": time.time(), "detail": detail})
            if self.stop.wait(period * self.random.uniform(0.8, 1.2)):
                return

    # -- the faults --------------------------------------------------------------------------------

    def _kill(self):
        role, slot, _ = self.cluster.random_process()
        old, new = self.cluster.replace(role, slot)
        return f"SIGKILL {role}{slot} pid {old}, replaced by {new}"

    def _pg_restart(self):
        self.cluster.pg_restart()
        return "pg_ctl restart -m fast"

    def _pg_terminate(self):
        _, _, worker = self.cluster.random_process(("worker",))
        _, _, api = self.cluster.random_process(("api",))
        names = (worker.chaos_name, api.chaos_name)
        rows = self.cluster.psql(
            "SELECT count(*), count(*) FILTER (WHERE query ILIKE 'LISTEN%%' OR query = 'SELECT 1') FROM ("
            f"SELECT query, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ('{names[0]}', '{names[1]}')) t")
        total, listens = rows.split("|")
        return f"pg_terminate_backend on {total} connections of {names[0]} and {names[1]} ({listens} of them LISTEN)"

    def _listen_cut(self):
        cut = self.cluster.pg_proxy.cut_listeners()
        now = time.monotonic()
        with self.lock:
            self.cut_listeners += [(c, now) for c in cut]
        return f"{len(cut)} LISTEN connections stop forwarding, left open"

    def _redis_restart(self):
        self.cluster.redis_restart()
        return "redis-server restarted (no persistence: every key gone)"

    def _redis_outage(self):
        hold = LEASE + 2
        self.cluster.redis_proxy.set("blackhole")
        time.sleep(hold)
        self.cluster.redis_proxy.restore()
        return f"Redis unreachable (connections stall, new ones hang) for {hold:.0f} s, longer than the {LEASE:.0f} s lease"

    def _sigstop(self):
        _, slot, process = self.cluster.random_process(("worker",))
        hold = LEASE + 3
        os.kill(process.pid, signal.SIGSTOP)
        time.sleep(hold)
        try:
            os.kill(process.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        return f"SIGSTOP worker{slot} pid {process.pid} for {hold:.0f} s (lease {LEASE:.0f} s), then SIGCONT"

    def _engine_delay(self):
        delay, hold = REQUEST_TIMEOUT_MS / 1000 * 2, 6
        for proxy in self.cluster.engine_proxies.values():
            proxy.set("delay", delay=delay)
        time.sleep(hold)
        for proxy in self.cluster.engine_proxies.values():
            proxy.restore()
        return f"engine path delayed {delay:.1f} s (request timeout {REQUEST_TIMEOUT_MS / 1000:.1f} s) for {hold} s"

    def _engine_status(self, status, hold):
        """A random session's engine answers as `status` for `hold` seconds, then is connected."""
        org, session, dialect = self.random.choice(sessions())
        self.cluster.sim_status(dialect, session, status)
        time.sleep(hold)
        self.cluster.sim_status(dialect, session, "connected")
        return org, session

    def _disconnect(self):
        _, session = self._engine_status("disconnected", 3)
        return f"{session} disconnected at its engine for 3 s, then connected"

    def _restrict(self):
        org, session = self._engine_status("restricted", 2)
        # An operator lifts the restriction once WhatsApp does (retried: the database may be restarting).
        for _ in range(30):
            try:
                self.cluster.cli("sessions", "set", "--id", session, "--org", org, "--state", "active", "--reason", "chaos: 463 lifted")
                break
            except RuntimeError:
                time.sleep(1)
        return f"{session} answered 463 for 2 s; then the operator set it active"

    # -- what the listen cut found -----------------------------------------------------------------

    LISTEN_NOTICE_S = 45

    def listener_outcomes(self):
        """Per cut LISTEN connection: ('given up', s) when its process closed it, ('server', s) when
        a restart or kill ended it first, ('open', s) when it is still open. Waits until every cut
        connection is LISTEN_NOTICE_S old (a 15 s idle check and its query's timeout fit in it)."""
        with self.lock:
            cut = list(self.cut_listeners)
        for _, at in cut:
            time.sleep(max(0.0, at + self.LISTEN_NOTICE_S - time.monotonic()))
        now = time.monotonic()
        outcomes = []
        for connection, at in cut:
            if connection.closed_at is not None:
                outcomes.append(("given up", connection.closed_at - at))
            elif connection.closed:
                outcomes.append(("server", None))
            else:
                outcomes.append(("open", now - at))
        return outcomes
