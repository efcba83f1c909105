"""Loopback servers for the openai-backend tests: llm-katan (a real OpenAI-compatible server) and a
fault-injecting proxy in front of it that answers 429/500 or drops the connection."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KatanServer:
    """llm-katan serving a local model folder on 127.0.0.1; the stats file holds its request count."""

    def __init__(self, model_dir: Path, workdir: Path, name: str = "tiny", api_key: str | None = None):
        self.port = free_port()
        self.stats_file = workdir / "katan-stats.json"
        self.log_file = workdir / "katan.log"
        katan = Path(sys.executable).with_name("llm-katan")
        cmd = [str(katan), "--model", str(model_dir), "--served-model-name", name, "--host", "127.0.0.1",
               "--port", str(self.port), "--no-quantize", "--device", "cpu", "--stats-file", str(self.stats_file),
               "--log-level", "warning"]
        if api_key:
            cmd += ["--validate-keys", "--api-keys", f"openai={api_key}"]
        self.log = open(self.log_file, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self._wait_ready()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llm-katan exited: {self.log_file.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("llm-katan did not become ready")

    def request_count(self) -> int:
        if not self.stats_file.exists():
            return 0
        return json.loads(self.stats_file.read_text())["total"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class FaultyProxy:
    """Forwards to `upstream`; the first `n_429` requests get HTTP 429, the next `n_500` get 500, and
    every `drop_every`-th request has its connection closed without an answer. Faults happen before
    forwarding, so the upstream sees each delivered request exactly once."""

    def __init__(self, upstream: str, n_429: int = 0, n_500: int = 0, drop_every: int = 0):
        self.upstream = upstream.rstrip("/")
        self.n_429, self.n_500, self.drop_every = n_429, n_500, drop_every
        self.lock = threading.Lock()
        self.seen = 0
        self.faults = {"429": 0, "500": 0, "drop": 0}
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.seen += 1
                    n = proxy.seen
                    if n <= proxy.n_429:
                        fault = "429"
                    elif n <= proxy.n_429 + proxy.n_500:
                        fault = "500"
                    elif proxy.drop_every and n % proxy.drop_every == 0:
                        fault = "drop"
                    else:
                        fault = None
                    if fault:
                        proxy.faults[fault] += 1
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault:
                    payload = json.dumps({"error": {"message": f"injected {fault}", "type": "test"}}).encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if fault == "429":
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                request = urllib.request.Request(proxy.upstream + self.path.removeprefix("/v1"), data=body,
                                                 method="POST")
                for key in ("Content-Type", "Authorization"):
                    if self.headers.get(key):
                        request.add_header(key, self.headers[key])
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                with proxy.lock:
                    proxy.forwarded += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
