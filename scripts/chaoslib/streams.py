"""One event-stream client per organization, as `EventSource` behaves: GET /api/v1/events from the
start (`?after=0`), and whenever the stream ends (its API process was killed, the database
restarted) it reconnects to the next API process with `Last-Event-ID`. Everything it received is
kept, in order, to be checked against the jobs at the end.
"""
import http.client
import json
import socket
import threading
import time


class StreamClient:
    def __init__(self, org, key, ports, log=print):
        self.org, self.key, self.ports, self.log = org, key, ports, log
        self.events = []  # (event id, outbox id, status)
        self.last_id = None
        self.connections = 0
        self.errors = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"stream-{org}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            ports = self.ports()
            port = ports[self.connections % len(ports)]
            self.connections += 1
            try:
                self._read(port)
            except (OSError, http.client.HTTPException, ValueError) as error:
                name = type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
            if not self.stop.is_set():
                time.sleep(0.2)

    def _read(self, port):
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        path = "/api/v1/events"
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        else:
            path += "?after=0"
        # Keep-alives come every 15 s; a stream silent for 40 s is taken as dead and resumed.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            response.read()
            self.errors[f"status {response.status}"] = self.errors.get(f"status {response.status}", 0) + 1
            return
        event_id, event_type, data = None, None, []
        try:
            while not self.stop.is_set():
                line = response.fp.readline()
                if not line:
                    return
                line = line.decode().rstrip("\r\n")
                if line == "":
                    if event_type == "message.status" and data:
                        payload = json.loads("\n".join(data))
                        with self.lock:
                            self.events.append((event_id, payload.get("outboxId"), payload.get("status")))
                    if event_id is not None:
                        self.last_id = event_id
                    event_id, event_type, data = None, None, []
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "id":
                        event_id = value
                    elif field == "event":
                        event_type = value
                    elif field == "data":
                        data.append(value)
        except socket.timeout:
            self.errors["silent 40 s"] = self.errors.get("silent 40 s", 0) + 1
        finally:
            connection.close()

    def received(self):
        with self.lock:
            return list(self.events)

    def finish(self):
        self.stop.set()
