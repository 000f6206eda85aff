"""A real HTTP server for the remote-shard tests: nginx on 127.0.0.1 serving a folder (it honours ``Range``),
its access log parsed into requests, and a small fault-injecting proxy in front of it."""

from __future__ import annotations

import http.client
import os
import http.server
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None)

_CONF = """\
{user}worker_processes 1;
daemon off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format ranges '$request_method $uri "$http_range" $status $body_bytes_sent';
    access_log {run}/access.log ranges;
    client_body_temp_path {run}/body; proxy_temp_path {run}/proxy; fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
    types {{ application/x-tar tar; application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str  # "" when the request had no Range header
    status: int
    bytes_sent: int


#: Path prefix of the marker requests that :meth:`Nginx.requests` sends to flush the access log.
_MARK = "/.log-marker-"


class Nginx:
    """``nginx`` serving ``root`` on 127.0.0.1 (foreground process, stopped by :meth:`stop`)."""

    def __init__(self, root: Path, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.root, self.run_dir, self.port = root, run_dir, free_port()
        # As root, nginx's workers would switch to "nobody", who cannot read pytest's private temp folders.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = run_dir / "nginx.conf"
        conf.write_text(_CONF.format(user=user, run=run_dir, port=self.port, root=root))
        self.access_log = run_dir / "access.log"
        self._start, self._marks = 0, 0  # log lines before _start are cleared; markers sent so far
        self.process = subprocess.Popen([NGINX, "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {(run_dir / 'error.log').read_text() if (run_dir / 'error.log').exists() else ''}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[Request]:
        """Every request served since the last :meth:`clear_log` (all of them if never cleared).

        nginx writes a request's log line just after sending its last byte, so a client can hold the whole
        response before the line is on disk. Each call therefore first sends a marker request of its own and
        waits for the marker's line: the one worker serves requests in turn, so every request answered before
        the marker was sent is logged above it. Marker lines are left out."""
        lines = self._sync()
        out = []
        for line in lines[self._start:]:
            method, path, rng, status, sent = line.split(" ")
            if path.startswith(_MARK):
                continue
            rng = rng.strip('"')
            out.append(Request(method, path, "" if rng == "-" else rng, int(status), int(sent)))
        return out

    def clear_log(self) -> None:
        """Forget the requests served so far (late log lines included, see :meth:`requests`)."""
        self._start = len(self._sync())

    def _sync(self, timeout_s: float = 10.0) -> list[str]:
        """Send a marker request, wait until its line is in the access log, and return the log's lines up to it."""
        self._marks += 1
        mark = f"{_MARK}{self._marks}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request("GET", mark)
            conn.getresponse().read()  # 404: nothing is served under the marker path
        finally:
            conn.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
            for i, line in enumerate(lines):
                if line.split(" ")[1:2] == [mark]:
                    return lines[:i]
            time.sleep(0.01)
        raise RuntimeError(f"nginx did not log the marker request {mark} within {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class FaultProxy:
    """HTTP proxy in front of ``upstream_port`` that fails requests on purpose.

    ``fault(path, range, attempt)`` decides for each request, where ``attempt`` counts the requests for the
    same (path, range) so far (1 = first): None forwards it; ``"503"`` answers 503; ``"reset"`` closes the
    connection without an answer; ``"stall"`` sends nothing for ``stall_s`` seconds (a client timeout must
    fire), then closes; ``"short"`` sends the headers and half of the body, then closes."""

    def __init__(self, upstream_port: int, fault, *, stall_s: float = 5.0):
        self.fault, self.stall_s, self.upstream_port = fault, stall_s, upstream_port
        self.attempts: dict = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._forward()

            def do_GET(self):
                self._forward()

            def _forward(self):
                rng = self.headers.get("Range", "")
                with proxy.lock:
                    n = proxy.attempts[(self.path, rng)] = proxy.attempts.get((self.path, rng), 0) + 1
                action = proxy.fault(self.path, rng, n)
                if action == "503":
                    body = b"injected failure"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if action in ("reset", "stall"):
                    if action == "stall":
                        time.sleep(proxy.stall_s)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=10)
                try:
                    upstream.request(self.command, self.path, headers={"Range": rng} if rng else {})
                    response = upstream.getresponse()
                    body = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for name in ("Content-Type", "Content-Range", "Accept-Ranges", "Last-Modified", "ETag"):
                    if response.getheader(name):
                        self.send_header(name, response.getheader(name))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    if action == "short":
                        self.wfile.write(body[: len(body) // 2])
                        self.close_connection = True
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
