"""How a hexgrid program's result is read: run it, return the board its last game left behind."""

import runpy

import hexgrid


def run(program_path: str, task: dict) -> list:
    runpy.run_path(program_path, run_name="__main__")
    return hexgrid.last_board_state()
