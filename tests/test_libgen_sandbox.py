"""The libgen sandbox: generated code that loops, eats memory, forks, phones out or writes outside its
folder is stopped and reported, and the listener the test opens sees no connection."""

import socket
from pathlib import Path

import pytest

from difflab.errors import DifflabError
from difflab.libgen import sandbox as sandbox_module
from difflab.libgen.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "resources/libgen/hexgrid/harness.py"
FOUNDATION = [REPO / "resources/libgen/hexgrid/hexgrid"]


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(timeout_s=3, cpu_s=30, memory_mb=256, file_size_mb=1, max_processes=16)


def run(sandbox, source):
    return sandbox.run_program(HARNESS, source, {"id": "t"}, FOUNDATION)


def test_a_program_draws_and_its_board_state_comes_back(sandbox):
    result = run(sandbox, "from hexgrid import Game, Tile\nwith Game():\n    Tile(1, 2).draw('red')\n"
                          "    Tile(1, 2).neighbor('down_right').draw('blue')\n")
    assert result.ok, result.message
    assert result.state == [[1, 2, "red"], [2, 3, "blue"]]  # row 1 is odd (shifted right): down_right is col + 1
    assert sandbox.describe()["isolation"] == "bwrap"


def test_an_infinite_loop_is_stopped_at_the_timeout(sandbox):
    result = run(sandbox, "while True:\n    pass\n")
    assert not result.ok and result.error_class == "timeout"
    assert 3 <= result.seconds < 10


def test_a_memory_bomb_hits_the_address_space_limit(sandbox):
    result = run(sandbox, "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))\n")
    assert not result.ok and result.error_class == "memory_limit"


def test_a_fork_bomb_hits_the_process_limit(sandbox):
    result = run(sandbox, "import os\nwhile True:\n    os.fork()\n")
    assert not result.ok and result.error_class in ("process_limit", "timeout")
    assert result.error_class == "process_limit", result.message


def test_no_connection_reaches_a_listener_on_the_host_loopback(sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        result = run(sandbox, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n")
        assert not result.ok and result.error_class == "network_denied", result.message
        with pytest.raises(socket.timeout):
            listener.accept()


def test_a_write_outside_the_working_folder_is_refused(sandbox, tmp_path):
    target = tmp_path / "outside.txt"
    result = run(sandbox, f"open({str(target)!r}, 'w').write('escaped')\n")
    assert not result.ok and result.error_class == "write_denied", result.message
    assert not target.exists()
    project_file = REPO / "escaped.txt"
    result = run(sandbox, f"open({str(project_file)!r}, 'w').write('escaped')\n")
    assert not result.ok and result.error_class == "write_denied"
    assert not project_file.exists()


def test_a_big_file_hits_the_file_size_limit_and_writing_inside_works(sandbox):
    assert run(sandbox, "open('note.txt', 'w').write('fine')\nimport hexgrid\nwith hexgrid.Game():\n    pass\n").ok
    result = run(sandbox, "open('big.bin', 'wb').write(b'x' * (4 * 2 ** 20))\n")
    assert not result.ok and result.error_class == "file_size_limit"


def test_the_project_is_not_importable_inside(sandbox):
    result = run(sandbox, "import difflab\n")
    assert not result.ok and result.error_class == "ModuleNotFoundError"
    result = run(sandbox, f"import os\nassert not os.listdir({str(REPO)!r}), os.listdir({str(REPO)!r})\n")
    assert result.ok, result.message


def test_an_exception_keeps_its_class_and_message(sandbox):
    result = run(sandbox, "from hexgrid import Tile\nTile(0, 0).draw('red')\n")
    assert result.error_class == "RuntimeError" and "no game is running" in result.message


def test_smoke_check_reports_missing_and_mismatched_signatures(sandbox, tmp_path):
    lib = tmp_path / "mylib"
    lib.mkdir()
    (lib / "__init__.py").write_text("")
    (lib / "shapes.py").write_text("def line(start, direction, length, color):\n    return None\n")
    good = sandbox.smoke_check("mylib.shapes", [{"name": "line", "params": ["start", "direction", "length", "color"]}],
                               [lib])
    assert good.ok, good.message
    bad = sandbox.smoke_check("mylib.shapes", [{"name": "line", "params": ["start", "length"]},
                                               {"name": "ring", "params": ["center"]}], [lib])
    assert not bad.ok and bad.error_class == "SignatureMismatch"
    assert "mylib.shapes.ring is not defined" in bad.message and "takes (start, direction, length, color)" in bad.message
    (lib / "shapes.py").write_text("def line(:\n")
    broken = sandbox.smoke_check("mylib.shapes", [{"name": "line", "params": []}], [lib])
    assert broken.error_class == "SyntaxError"


def test_without_isolation_the_sandbox_refuses_unless_the_config_opts_out(monkeypatch):
    monkeypatch.setattr(sandbox_module, "bwrap_executable", lambda: None)
    with pytest.raises(DifflabError, match="allow_unisolated"):
        Sandbox()
    unisolated = Sandbox(allow_unisolated=True, timeout_s=5, memory_mb=256)
    assert unisolated.describe()["isolation"] == "none"
    result = run(unisolated, "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))\n")
    assert result.error_class == "memory_limit"  # the rlimits still hold
