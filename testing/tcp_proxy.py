"""A TCP proxy on loopback that can cut the line: a real network outage for tests.

During an outage every open connection is reset and new ones are refused, exactly what a
client sees when a database server or a switch goes away for a few seconds.
"""
from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; ``outage(seconds)`` cuts it for a while."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._down_until = 0.0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.outages = 0
        self.cut_connections = 0  # connections that were open when an outage began
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def outage(self, seconds: float) -> None:
        """Reset every connection now and refuse new ones for ``seconds``."""
        self.outages += 1
        self._cut(seconds)

    def _cut(self, seconds: float) -> None:
        self._down_until = time.monotonic() + seconds
        with self._lock:
            conns, self._conns = list(self._conns), set()
        if seconds > 0:
            self.cut_connections += len(conns) // 2
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self._cut(0)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
