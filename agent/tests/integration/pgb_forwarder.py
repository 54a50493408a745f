"""A TCP forwarder between the agent and a real endpoint, for outage tests: it forwards bytes both ways
until the test cuts it.

- ``cut()``: resets every open connection and closes the listening socket, so new connections are
  refused (an endpoint that went away); ``restore()`` listens again on the same port.
- ``outage(seconds)``: cut now, restore after ``seconds`` in the background.
- ``cut_mid_body(after_bytes)``: the next time ``after_bytes`` more bytes have gone towards the
  endpoint (or come from it), forward only half of the current block and reset that connection: a
  request body (or a download) cut in the middle; optionally followed by an outage.
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import List, Optional, Set


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), waking any thread blocked on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpForwarder:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self._listener: Optional[socket.socket] = None
        self._conns: Set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._down = False
        self._mid_body_at: Optional[int] = None   # upstream bytes left before a mid-body cut
        self._down_after_cut = 0.0
        self._cut_upstream = True
        self.restorer: Optional[threading.Thread] = None
        self.cuts = 0
        self.mid_body_cuts = 0
        self.connections = 0
        self.refused_while_down = 0
        self._threads: List[threading.Thread] = []
        self._listen()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="fwd-accept")
        self._acceptor.start()

    def url(self, scheme: str = "http", host: Optional[str] = None) -> str:
        return f"{scheme}://{host or self.host}:{self.port}"

    # -- control -------------------------------------------------------------------------------------
    def cut(self) -> None:
        with self._lock:
            self._down = True
            self.cuts += 1
            listener, self._listener = self._listener, None
            conns, self._conns = list(self._conns), set()
        if listener is not None:
            listener.close()
        for c in conns:
            _reset(c)

    def restore(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._listen()
            self._down = False

    def outage(self, seconds: float) -> threading.Thread:
        """Cut now and restore after ``seconds`` (in a thread; join it to wait for the restore)."""
        self.cut()

        def later() -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self._closed and self._down:
                time.sleep(0.05)
            if not self._closed:
                self.restore()

        t = threading.Thread(target=later, daemon=True, name="fwd-restore")
        t.start()
        return t

    def cut_mid_body(self, after_bytes: int, down_for: float = 0, towards_endpoint: bool = True) -> None:
        """Arm a cut in the middle of the data flowing to the endpoint (or, with ``towards_endpoint``
        False, coming from it: a download); with ``down_for``, the cut also starts an outage of that many
        seconds (every connection reset, new ones refused)."""
        with self._lock:
            self._mid_body_at = after_bytes
            self._down_after_cut = down_for
            self._cut_upstream = towards_endpoint

    def close(self) -> None:
        self._closed = True
        self.cut()

    # -- plumbing ------------------------------------------------------------------------------------
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):   # the port of the socket closed by cut() may take a moment to be free
            try:
                s.bind((self.host, self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            s.bind((self.host, self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s

    def _accept_loop(self) -> None:
        while not self._closed:
            listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._down:
                    self.refused_while_down += 1
                    _reset(client)
                    _reset(upstream)
                    continue
                self._conns.update((client, upstream))
                self.connections += 1
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True, name="fwd-pump")
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream == self._cut_upstream and self._mid_body_at is not None:
                    with self._lock:
                        left = self._mid_body_at
                        if left is not None and left <= len(data):
                            self._mid_body_at = None
                            self.mid_body_cuts += 1
                            cut_here = True
                        else:
                            if left is not None:
                                self._mid_body_at = left - len(data)
                            cut_here = False
                    if cut_here:
                        dst.sendall(data[:max(len(data) // 2, 1)])
                        _reset(src)
                        _reset(dst)
                        if self._down_after_cut:
                            self.restorer = self.outage(self._down_after_cut)
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _reset(src)
            _reset(dst)
