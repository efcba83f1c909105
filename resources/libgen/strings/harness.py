"""How a textkit program's result is read: call its solve() on every input of the task."""

import runpy


def run(program_path: str, task: dict) -> list:
    namespace = runpy.run_path(program_path, run_name="solution")
    solve = namespace.get("solve")
    if not callable(solve):
        raise NameError("the program defines no solve(text) function")
    return [[i, solve(text)] for i, text in enumerate(task["inputs"])]
