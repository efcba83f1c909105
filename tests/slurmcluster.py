"""A one-node SLURM cluster on this machine, from Debian's packages, on localhost (no systemd needed).

    python tests/slurmcluster.py start DIR   configure (first time) and start every daemon; prints SLURM_CONF=...
    python tests/slurmcluster.py stop DIR    stop the daemons through their pid files (reverse order)
    python tests/slurmcluster.py status DIR  exit 0 when the controller answers and the node is usable

Needs root and `apt-get install slurmctld slurmd slurmdbd slurm-client munge mariadb-server`. `start` is
idempotent: a daemon whose pid file names a live process is left alone, the configuration and the
accounting database are kept in DIR between runs. Daemons, in order, each waited for:

    munged                 auth; the Debian key /etc/munge/munge.key, as the munge user
    mariadbd (mysqld_safe) accounting database on 127.0.0.1 and a free port (`mysqladmin ping`)
    slurmdbd               accounting daemon, so `sacct` has history (`sacctmgr show cluster`)
    slurmctld              controller (`scontrol ping`)
    slurmd                 the one node, named `hostname -s`, with a GPU that is only a count
                           (gres.conf `Name=gpu File=/dev/null`: the count-only form drains the node)

Partitions `cpu` (default) and `gpu` share the node; account `difflab` holds the calling user.
`DefMemPerCPU` is set, or each job would take the whole node's memory and run alone. Clients find the
cluster through the SLURM_CONF variable that `start` prints, and through /etc/slurm/slurm.conf, a
symlink to DIR's file: the slurm executor's job steps drop every SLURM_* variable before they call
`srun`, which then reads the default path. An /etc/slurm/slurm.conf that is not such a symlink is
never replaced (start refuses); stop removes the symlink.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLUSTER = "difflab"
ACCOUNT = "difflab"
PACKAGES = "slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
MUNGE_SOCKET_DIR = Path("/run/munge")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# Written by tests/slurmcluster.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result


def _wait(what: str, ready, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while not ready():
        if time.time() > deadline:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s{': ' + tail if tail else ''}")
        time.sleep(0.3)


def _alive(pidfile: Path) -> int | None:
    """The pid in `pidfile` when that process is alive, else None."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


class Cluster:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory).resolve()
        self.conf = self.dir / "etc" / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}

    # ---- configuration (written once; ports and secrets kept in settings.json)
    def settings(self) -> dict:
        path = self.dir / "settings.json"
        if path.exists():
            return json.loads(path.read_text())
        mem_total_mb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                                if l.startswith("MemTotal")).split()[1]) // 1024
        cpus = os.cpu_count() or 1
        real_memory = int(mem_total_mb * 0.85)
        settings = {
            "node": socket.gethostname().split(".")[0],
            "cpus": cpus,
            "real_memory_mb": real_memory,
            "def_mem_per_cpu_mb": max(256, real_memory // (4 * cpus)),
            "ports": {name: _free_port() for name in ("mysql", "slurmdbd", "slurmctld", "slurmd")},
            "db_password": secrets.token_hex(16),
            "user": pwd.getpwuid(os.getuid()).pw_name,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))
        path.chmod(0o600)
        return settings

    def configure(self) -> dict:
        s = self.settings()
        d = self.dir
        for sub in ("etc", "log", "run", "state/ctld", "state/d", "mysql"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)  # the mysql and munge users must traverse it
        closed = [str(p) for p in d.parents if not p.stat().st_mode & 0o001]
        if closed:
            raise RuntimeError(f"{d}: the mysql user cannot reach it ({closed[0]} is not world-traversable)")
        node, ports = s["node"], s["ports"]
        self.conf.write_text(f"""{MARK}: a one-node cluster on localhost.
ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={d}/state/ctld
SlurmdSpoolDir={d}/state/d
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
GresTypes=gpu
DefMemPerCPU={s['def_mem_per_cpu_mb']}
MinJobAge=600
KillWait=5
InactiveLimit=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
NodeName={node} NodeAddr=127.0.0.1 CPUs={s['cpus']} RealMemory={s['real_memory_mb']} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={node} MaxTime=INFINITE State=UP
""")
        (d / "etc" / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
        dbd = d / "etc" / "slurmdbd.conf"
        dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
PidFile={d}/run/slurmdbd.pid
LogFile={d}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mysql']}
StorageUser=slurm
StoragePass={s['db_password']}
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read
        self._link_system_conf()
        return s

    def _link_system_conf(self) -> None:
        if SYSTEM_CONF.is_symlink() and (not SYSTEM_CONF.exists() or SYSTEM_CONF.read_text().startswith(MARK)):
            SYSTEM_CONF.unlink()  # this cluster's link, an earlier one's, or a dangling one
        elif SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            raise RuntimeError(f"{SYSTEM_CONF} exists and is not a link this script made: a real cluster's "
                               "configuration is never replaced")
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)

    # ---- daemons
    def _munge(self) -> None:
        def ok() -> bool:
            enc = subprocess.run(["munge", "-n"], capture_output=True)
            return enc.returncode == 0 and subprocess.run(["unmunge"], input=enc.stdout,
                                                          capture_output=True).returncode == 0
        if ok():
            return
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
        Path("/var/log/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/var/log/munge", "munge", "munge")
        Path("/var/lib/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/var/lib/munge", "munge", "munge")
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
        _wait("munged", ok, log=Path("/var/log/munge/munged.log"))
        shutil.copy(MUNGE_SOCKET_DIR / "munged.pid", self.dir / "run" / "munged.pid")  # ours to stop

    def _mysql(self, s: dict) -> None:
        data, sock, pid = self.dir / "mysql", self.dir / "mysql" / "mysqld.sock", self.dir / "mysql" / "mysqld.pid"
        port = s["ports"]["mysql"]

        def ping() -> bool:
            return subprocess.run(["mysqladmin", "--no-defaults", f"--socket={sock}", "ping"],
                                  capture_output=True).returncode == 0
        if _alive(pid) and ping():
            return
        shutil.chown(data, "mysql", "mysql")
        if not (data / "mysql").is_dir():
            _run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
                  "--auth-root-authentication-method=socket", "--skip-test-db"])
        log = self.dir / "log" / "mysqld.log"
        log.touch()
        shutil.chown(log, "mysql", "mysql")
        subprocess.Popen(["mysqld_safe", "--no-defaults", "--user=mysql", f"--datadir={data}", f"--socket={sock}",
                          f"--pid-file={pid}", "--bind-address=127.0.0.1", f"--port={port}",
                          f"--log-error={log}", "--innodb-buffer-pool-size=64M", "--skip-name-resolve"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait("mariadbd", ping, log=log)
        pw = s["db_password"]
        sql = (f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{pw}';"
               f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{pw}';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        _run(["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql])

    def _sacctmgr(self, *args: str) -> subprocess.CompletedProcess:
        return _run(["sacctmgr", "-i", *args], env=self.env, check=False)

    def _slurmdbd(self) -> None:
        pid = self.dir / "run" / "slurmdbd.pid"

        def ok() -> bool:
            return self._sacctmgr("-n", "show", "cluster").returncode == 0
        if _alive(pid) and ok():
            return
        _run(["slurmdbd"], env=self.env)
        _wait("slurmdbd", ok, log=self.dir / "log" / "slurmdbd.log")
        self._sacctmgr("add", "cluster", CLUSTER)  # "nothing new added" on a rerun is fine

    def _slurmctld(self) -> None:
        pid = self.dir / "run" / "slurmctld.pid"

        def ok() -> bool:
            out = _run(["scontrol", "ping"], env=self.env, check=False).stdout
            return "is UP" in out
        if _alive(pid) and ok():
            return
        _run(["slurmctld"], env=self.env)
        _wait("slurmctld", ok, log=self.dir / "log" / "slurmctld.log")

    def _slurmd(self, s: dict) -> None:
        pid = self.dir / "run" / "slurmd.pid"
        if not _alive(pid):
            _run(["slurmd"], env=self.env)
        node = s["node"]

        def state() -> str:
            return _run(["sinfo", "-h", "-n", node, "-o", "%T"], env=self.env, check=False).stdout.strip()
        _wait("slurmd", lambda: state().rstrip("*").split("\n")[0] in ("idle", "mixed", "allocated", "drained",
                                                                          "down", "draining"),
              log=self.dir / "log" / "slurmd.log")
        if any(word in state() for word in ("drain", "down")):
            _run(["scontrol", "update", f"nodename={node}", "state=resume"], env=self.env, check=False)
        _wait("node", lambda: state().rstrip("*") in ("idle", "mixed", "allocated"),
              log=self.dir / "log" / "slurmd.log")

    def _accounts(self, s: dict) -> None:
        self._sacctmgr("add", "account", ACCOUNT, f"cluster={CLUSTER}", "description=difflab", "organization=difflab")
        self._sacctmgr("add", "user", s["user"], f"account={ACCOUNT}", f"cluster={CLUSTER}")
        _wait("account association", lambda: ACCOUNT in self._sacctmgr(
            "-n", "-s", "list", "user", s["user"], "format=account%64").stdout)

    def start(self) -> str:
        if os.geteuid() != 0:
            raise RuntimeError("a local SLURM cluster needs root (slurmd runs jobs as their users)")
        missing = [b for b in ("slurmctld", "slurmd", "slurmdbd", "munged", "mysqld_safe", "sbatch")
                   if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)}: apt-get install {PACKAGES}")
        s = self.configure()
        self._munge()
        self._mysql(s)
        self._slurmdbd()
        self._accounts(s)
        self._slurmctld()
        self._slurmd(s)
        return str(self.conf)

    def status(self) -> bool:
        if not self.conf.exists():
            return False
        s = self.settings()
        ping = _run(["scontrol", "ping"], env=self.env, check=False).stdout
        state = _run(["sinfo", "-h", "-n", s["node"], "-o", "%T"], env=self.env, check=False).stdout.strip()
        return "is UP" in ping and state.rstrip("*") in ("idle", "mixed", "allocated")

    def stop(self) -> None:
        """Daemons in reverse order, each through its pid file (munged only if start started it)."""
        for pidfile in ("run/slurmd.pid", "run/slurmctld.pid", "run/slurmdbd.pid", "mysql/mysqld.pid",
                        "run/munged.pid"):
            pid = _alive(self.dir / pidfile)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 30
            while _alive(self.dir / pidfile) == pid and time.time() < deadline:
                time.sleep(0.2)
            if _alive(self.dir / pidfile) == pid:
                os.kill(pid, signal.SIGKILL)
        if SYSTEM_CONF.is_symlink() and Path(os.readlink(SYSTEM_CONF)) == self.conf:
            SYSTEM_CONF.unlink()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "status"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    cluster = Cluster(argv[1])
    try:
        if argv[0] == "start":
            print(f"SLURM_CONF={cluster.start()}")
        elif argv[0] == "stop":
            cluster.stop()
        else:
            return 0 if cluster.status() else 1
    except RuntimeError as exc:
        print(f"slurmcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
