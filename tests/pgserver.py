"""A throwaway PostgreSQL server from the installed packages, on 127.0.0.1 and a free port.

    python tests/pgserver.py start DIR   initdb + start; prints the server URL (trust auth, user postgres)
    python tests/pgserver.py stop DIR    fast shutdown

.ci/run starts one and exports DIFFLAB_TEST_POSTGRES_URL; without that variable the test fixture
starts its own. As root, the server runs as the `postgres` user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def bindir() -> Path | None:
    for candidate in [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]:
        if candidate and Path(candidate).with_name("initdb").exists():
            return Path(candidate).resolve().parent
    return None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(directory: str | Path) -> str:
    bins = bindir()
    if bins is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    directory = Path(directory)
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
    subprocess.run(_as_server_user([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                    "--no-sync", "-E", "UTF8", "--locale=C"]),
                   check=True, capture_output=True, text=True)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off -c max_connections=50"
    subprocess.run(_as_server_user([str(bins / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
                                    "-o", options, "-w", "-t", "60", "start"]),
                   check=True, capture_output=True, text=True)
    (directory / "url").write_text(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    return (directory / "url").read_text()


def stop(directory: str | Path) -> None:
    bins = bindir()
    data = Path(directory) / "data"
    if bins and data.is_dir():
        subprocess.run(_as_server_user([str(bins / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, text=True)


def wait_ready(url: str, timeout: float = 30) -> None:
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    action, where = sys.argv[1], sys.argv[2]
    if action == "start":
        print(start(where))
    elif action == "stop":
        stop(where)
    else:
        sys.exit(f"usage: {sys.argv[0]} start|stop DIR")
