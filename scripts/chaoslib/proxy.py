"""A TCP proxy inside the chaos harness, on an asyncio loop of its own thread.

Between the wa-outbox processes and PostgreSQL, Redis or an engine, it can:
  - pass:      forward both ways (the default);
  - blackhole: stop forwarding without closing, both ways, on every connection (or only on the
               connections that sent LISTEN, `listen_only`): a half-open peer. New connections are
               accepted and left hanging too, unless `listen_only`;
  - refuse:    close every connection and refuse new ones (a server that is gone);
  - delay:     hold every chunk `delay` seconds, in order (a slow network); when the delay ends,
               what is held goes out at once, in the order it came, before anything newer.
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

    async def hold_until(self, due, connection):
        async with self._changed:
            while self.mode == "delay" and time.monotonic() < due and not connection.closed:
                try:
                    await asyncio.wait_for(self._changed.wait(), max(0.001, due - time.monotonic()))
                except asyncio.TimeoutError:
                    pass

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
        proxy = self.proxy
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
                if proxy.mode == "delay" and proxy.delay > 0:
                    due = time.monotonic() + proxy.delay
                    # Held in order: each chunk waits for its own due time or the delay's end.
                    await proxy.hold_until(due, self)
                await proxy.wait_forwardable(self)
                if self.closed:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            self._client_gone(upstream)
        except asyncio.CancelledError:
            pass
        finally:
            self.close()
