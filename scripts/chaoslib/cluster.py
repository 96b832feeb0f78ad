"""The system under test: PostgreSQL and Redis (scripts/lib/servers.sh), two HTTP simulators
(wuzapi's and WAHA's dialect), API and worker processes, each reaching its server through a
harness proxy (proxy.py), so the harness can cut, stall or slow any path.

Processes are replaced at once when the harness kills one; `pids` keeps who is who.
"""
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

from proxy import Proxy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVERS = os.path.join(ROOT, "scripts", "lib", "servers.sh")

# Short enough that the lease faults fit in a minute; the request timeout is what the engine
# delay fault exceeds.
LEASE_MS = 6000
REQUEST_TIMEOUT_MS = 1500
UNLIMITED = ["--rate-per-second", "100000", "--burst", "100000", "--pacing", "off"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(*args):
    return subprocess.run(["bash", SERVERS, *args], check=True, capture_output=True, text=True).stdout.strip()


def port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Cluster:
    def __init__(self, binary, work, pg_url, redis_url, workers=3, apis=2, log=print):
        self.bin, self.work, self.log = binary, work, log
        self.pg_url, self.redis_url = pg_url, redis_url
        self.pg_dir, self.redis_dir = os.path.join(work, "pg"), os.path.join(work, "redis")
        self.pg_proxy = Proxy("pg", port_of(pg_url)).start()
        self.redis_proxy = Proxy("redis", port_of(redis_url)).start()
        pg_via = pg_url.rsplit(":", 1)[0] + f":{self.pg_proxy.port}/postgres"
        self.env = dict(os.environ, DATABASE_URL=pg_via, REDIS_URL=f"redis://127.0.0.1:{self.redis_proxy.port}/0",
                        WA_OUTBOX_LOG_LEVEL=os.environ.get("CHAOS_LOG_LEVEL", "warning"))
        self.worker_count, self.api_count = workers, apis
        self.simulators = {}
        self.engine_proxies = {}
        self.workers, self.apis = {}, {}  # slot -> Popen
        self.api_ports = {}
        self.lock = threading.Lock()
        self.generation = 0
        self.stopping = False

    # -- servers -------------------------------------------------------------------------------

    def psql(self, sql, direct=True):
        done = subprocess.run(["psql", self.pg_url if direct else self.env["DATABASE_URL"], "-qAtX", "-v", "ON_ERROR_STOP=1"],
                              input=sql, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def cli(self, *args):
        done = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"wa-outbox {' '.join(args)} exited {done.returncode}: {done.stderr[-1000:]}")
        return done.stdout.strip()

    def pg_restart(self):
        servers("pg-restart", self.pg_dir)

    def redis_restart(self):
        servers("redis-restart", self.redis_dir)

    # -- simulators ----------------------------------------------------------------------------

    def start_simulators(self, ambiguous_delay_ms=2500):
        for dialect in ("wuzapi", "waha"):
            port = free_port()
            log = os.path.join(self.work, f"deliveries-{dialect}.jsonl")
            args = [self.bin, "simulator", "--dialect", dialect, "--listen", f"127.0.0.1:{port}", "--delivery-log", log,
                    "--sim-latency-ms", "2", "--sim-transient-rate", "0.01", "--sim-ambiguous-rate", "0.005",
                    "--sim-ambiguous-delay-ms", str(ambiguous_delay_ms), "--sim-rate-limit", "150"]
            stderr = open(os.path.join(self.work, f"simulator-{dialect}.log"), "w")
            process = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
            self._pidfile(f"simulator-{dialect}", process)
            self.simulators[dialect] = {"process": process, "port": port, "log": log}
            self.engine_proxies[dialect] = Proxy(f"engine-{dialect}", port).start()
        for dialect, sim in self.simulators.items():
            wait_http(sim["port"], "/sim/stats")

    def sim_status(self, dialect, session, status):
        sim = self.simulators[dialect]
        body = json.dumps({"status": status})
        connection = http.client.HTTPConnection("127.0.0.1", sim["port"], timeout=10)
        connection.request("POST", f"/sim/sessions/{session}/status", body, {"Content-Type": "application/json"})
        connection.getresponse().read()

    def sim_stats(self, dialect):
        connection = http.client.HTTPConnection("127.0.0.1", self.simulators[dialect]["port"], timeout=30)
        connection.request("GET", "/sim/stats")
        return json.loads(connection.getresponse().read())

    def engine_url(self, dialect):
        return f"http://127.0.0.1:{self.engine_proxies[dialect].port}"

    # -- wa-outbox processes -------------------------------------------------------------------

    def _spawn(self, role, slot):
        self.generation += 1
        name = f"{role}{slot}-g{self.generation}"
        stderr = open(os.path.join(self.work, f"{name}.log"), "w")
        if role == "worker":
            args = [self.bin, "worker", "--name", name, "--lease-ms", str(LEASE_MS), "--request-timeout-ms", str(REQUEST_TIMEOUT_MS),
                    "--poll-interval-ms", "500", "--retry-base-ms", "100", "--retry-cap-ms", "2000", "--grace-ms", "2000",
                    "--admin-listen", "off", "--health-interval-ms", "1000", "--concurrency", "64"] + UNLIMITED
        else:
            port = self.api_ports.setdefault(slot, free_port())
            args = [self.bin, "api", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off"] + UNLIMITED
        # Its own application_name, so a fault can find this process's connections (the URL's wins).
        env = dict(self.env, DATABASE_URL=self.env["DATABASE_URL"] + f"?application_name=chaos-{name}")
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        process.chaos_name = f"chaos-{name}"
        self._pidfile(name, process)
        return process

    def _pidfile(self, name, process):
        # scripts/chaos ends any process still listed here if the harness itself dies.
        with open(os.path.join(self.work, f"{name}.pid"), "w") as f:
            f.write(str(process.pid))

    def start_processes(self):
        with self.lock:
            for slot in range(self.worker_count):
                self.workers[slot] = self._spawn("worker", slot)
            for slot in range(self.api_count):
                self.apis[slot] = self._spawn("api", slot)
        for slot in range(self.api_count):
            wait_http(self.api_ports[slot], "/healthz", timeout=120)

    def ports(self):
        return [self.api_ports[s] for s in range(self.api_count)]

    def random_process(self, roles=("worker", "api")):
        role = random.choice(roles)
        table = self.workers if role == "worker" else self.apis
        slot = random.choice(list(table))
        return role, slot, table[slot]

    def replace(self, role, slot):
        """Kills (SIGKILL) the process in a slot and starts its replacement at once."""
        with self.lock:
            table = self.workers if role == "worker" else self.apis
            process = table[slot]
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            table[slot] = self._spawn(role, slot)
            return process.pid, table[slot].pid

    def check_alive(self):
        """Restarts any process that exited by itself, and says which (an exit is a finding)."""
        exited = []
        with self.lock:
            for role, table in (("worker", self.workers), ("api", self.apis)):
                for slot, process in list(table.items()):
                    if process.poll() is not None and not self.stopping:
                        exited.append(f"{role}{slot} pid {process.pid} exited {process.returncode}")
                        table[slot] = self._spawn(role, slot)
        return exited

    def stop_all(self):
        self.stopping = True
        with self.lock:
            processes = list(self.workers.values()) + list(self.apis.values())
        for process in processes:
            try:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_simulators(self):
        for sim in self.simulators.values():
            sim["process"].terminate()
            try:
                sim["process"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                sim["process"].kill()


def wait_http(port, path, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers {path} on port {port}")
