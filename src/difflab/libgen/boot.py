"""Runs inside the sandbox (copied there as _boot.py; it imports nothing from difflab).

    python -I -S _boot.py run HARNESS PROGRAM TASK_JSON OUT_JSON     a program's state, through the harness
    python -I -S _boot.py smoke MODULE SPEC_JSON OUT_JSON            do a module's proposed signatures exist?

OUT_JSON gets {"ok": true, ...} or {"ok": false, "error_class", "message", "traceback"}.
"""

import errno
import importlib
import importlib.util
import inspect
import json
import os
import sys
import traceback

MAIN_PID = os.getpid()


def write(path, record):
    with open(path, "w") as f:
        json.dump(record, f)


def classify(exc):
    """The error class a failure is reported under."""
    if isinstance(exc, MemoryError):
        return "memory_limit"
    if isinstance(exc, BlockingIOError) or (isinstance(exc, OSError) and exc.errno == errno.EAGAIN):
        return "process_limit"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and exc.filename:
        return "write_denied"
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                                                   errno.EADDRNOTAVAIL):
        return "network_denied"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "file_size_limit"
    return type(exc).__name__


def load_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(harness_path, program_path, task_path, out_path):
    with open(task_path) as f:
        task = json.load(f)
    harness = load_file(harness_path, "_harness")
    state = harness.run(program_path, task)
    return {"ok": True, "state": json.loads(json.dumps(state))}


def smoke(module_name, spec_path, out_path):
    """Every proposed function/class exists, is callable and takes the proposed parameters."""
    with open(spec_path) as f:
        signatures = json.load(f)
    module = importlib.import_module(module_name)
    problems = []
    for sig in signatures:
        obj = getattr(module, sig["name"], None)
        if obj is None:
            problems.append(f"{module_name}.{sig['name']} is not defined")
            continue
        if not callable(obj):
            problems.append(f"{module_name}.{sig['name']} is not callable")
            continue
        target = obj.__init__ if inspect.isclass(obj) else obj
        try:
            params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
        except (TypeError, ValueError):
            continue
        wanted = [p for p in sig["params"] if p not in ("self", "cls")]
        if [p for p in params if not p.startswith("*")][: len(wanted)] != wanted and params != wanted:
            problems.append(f"{module_name}.{sig['name']} takes ({', '.join(params)}), "
                            f"the proposal says ({', '.join(wanted)})")
    if problems:
        return {"ok": False, "error_class": "SignatureMismatch", "message": "; ".join(problems)}
    return {"ok": True}


def main():
    sys.path.insert(0, os.getcwd())
    mode, *args = sys.argv[1:]
    out_path = args[-1]
    try:
        record = run(*args) if mode == "run" else smoke(*args)
    except BaseException as exc:  # everything the program raises is a reported result
        if os.getpid() != MAIN_PID:  # a forked child of the program: leave quietly
            os._exit(1)
        if isinstance(exc, SystemExit) and not exc.code:
            record = {"ok": False, "error_class": "SystemExit", "message": "the program called exit()"}
        else:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            record = {"ok": False, "error_class": classify(exc), "message": f"{type(exc).__name__}: {exc}"[:2000],
                      "traceback": "".join(tb[-6:])[-4000:]}
    if os.getpid() != MAIN_PID:
        os._exit(0)
    try:
        write(out_path, record)
    except MemoryError:
        os._exit(3)
    sys.exit(0 if record.get("ok") else 1)


if __name__ == "__main__":
    main()
