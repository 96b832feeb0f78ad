"""A TCP proxy inside the chaos harness, on an asyncio loop of its own thread.

Between the wa-outbox processes and PostgreSQL, Redis or an engine, it can:
  - pass:      forward both ways (the default);
  - blackhole: stop forwarding without closing, both ways, on every connection (or only on the
               connections that sent LISTEN, `listen_only`): a half-open peer. New connections are
               accepted and left hanging too, unless `listen_only`;
  - refuse:    close every connection and refuse new ones (a server that is gone);
  - delay:     every byte that arrives while it is on goes out `delay` seconds after it arrived:
               one first-in first-out queue over all connections and both directions (a slow
               link). When the delay ends, what is held still goes out at its own time, and
               anything newer waits behind it, so nothing overtakes what was sent before it.
"""
import asyncio
import threading
import time


class Proxy:
    def __init__(self, name, upstream_port, listen_port=0):
        self.name = name
        self.upstream = upstream_port
        self.port = listen_port
        self.mode = "pass"
        self.delay = 0.0
        self.listen_only = False
        self.connections = set()
        self.loop = None
        self.server = None
        self._ready = threading.Event()
        self._changed = None
        # The release time of the latest chunk queued: no chunk goes out before an older one.
        self.last_release = 0.0

    def start(self):
        thread = threading.Thread(target=self._run, name=f"proxy-{self.name}", daemon=True)
        thread.start()
        self._ready.wait(10)
        return self

    def _run(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._changed = asyncio.Condition()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    # -- control, from any thread -------------------------------------------------------------

    def set(self, mode, delay=0.0, listen_only=False):
        def apply():
            self.mode, self.delay, self.listen_only = mode, delay, listen_only
            if mode == "refuse":
                for connection in list(self.connections):
                    connection.close()
            self.loop.create_task(self._notify())
        self.loop.call_soon_threadsafe(apply)

    def restore(self):
        self.set("pass")

    async def _notify(self):
        async with self._changed:
            self._changed.notify_all()

    def cut_listeners(self):
        """Every connection that has sent LISTEN stops forwarding for good, both ways, and stays
        open: what it is sent is dropped, nothing comes back. Its process must notice and replace it."""
        cut = [c for c in list(self.connections) if c.listens and not c.closed]
        for connection in cut:
            connection.cut = True
        return cut

    # -- forwarding ----------------------------------------------------------------------------

    async def _accept(self, reader, writer):
        if self.mode == "refuse":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        connection = Connection(self, writer, up_writer)
        self.connections.add(connection)
        try:
            await asyncio.gather(connection.pump(reader, up_writer, upstream=True),
                                 connection.pump(up_reader, writer, upstream=False))
        finally:
            connection.close()
            self.connections.discard(connection)

    def _stalled(self, connection):
        if self.mode != "blackhole":
            return False
        return connection.listens if self.listen_only else True

    def release_time(self):
        """When a chunk arriving now may go out: after the delay, and never before an older chunk."""
        now = time.monotonic()
        due = now + (self.delay if self.mode == "delay" else 0.0)
        self.last_release = max(due, self.last_release) if self.last_release > now else due
        return self.last_release

    async def wait_forwardable(self, connection):
        async with self._changed:
            while self._stalled(connection) and not connection.closed:
                await self._changed.wait()


class Connection:
    def __init__(self, proxy, client_writer, upstream_writer):
        self.proxy = proxy
        self.writers = (client_writer, upstream_writer)
        self.listens = False
        self.cut = False
        self.closed = False
        # When the process closed its end (monotonic), for a cut connection: how long it took to notice.
        self.closed_at = None

    def close(self):
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            try:
                writer.close()
            except Exception:
                pass
        self.proxy.loop.create_task(self.proxy._notify())

    def _client_gone(self, upstream):
        if upstream and self.closed_at is None and not self.closed:
            self.closed_at = time.monotonic()

    async def pump(self, reader, writer, upstream):
        """Reads as bytes arrive and stamps each chunk with its release time; `forward` sends it
        then. Reading never waits for forwarding, so a delay does not grow chunk by chunk."""
        queue = asyncio.Queue()
        forwarding = asyncio.ensure_future(self.forward(queue, writer))
        try:
            while not self.closed:
                data = await reader.read(65536)
                if not data:
                    self._client_gone(upstream)
                    break
                if self.cut:
                    continue
                if upstream and not self.listens and b"LISTEN " in data.upper():
                    self.listens = True
                queue.put_nowait((self.proxy.release_time(), data))
        except (OSError, ConnectionError):
            self._client_gone(upstream)
        except asyncio.CancelledError:
            pass
        finally:
            queue.put_nowait((0.0, None))
            try:
                await forwarding
            except (OSError, ConnectionError, asyncio.CancelledError):
                pass
            self.close()

    async def forward(self, queue, writer):
        proxy = self.proxy
        while True:
            release, data = await queue.get()
            if data is None or self.closed:
                return
            wait = release - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await proxy.wait_forwardable(self)
            if self.closed:
                return
            writer.write(data)
            await writer.drain()
