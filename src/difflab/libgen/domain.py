"""A libgen domain, all by path: a foundation package, a harness, tasks with reference programs.

`domain.yaml` names the foundation package folder, the harness file (`run(program_path, task)` returns
the program's result as a list of JSON items: the tiles of a board, the outputs of a function), the
task file (JSONL: id, split, instruction, solution on the foundation alone, state = the reference
result) and the name of the library to generate. A user points `libgen.experiments.<name>.domain` at
their own folder.
"""

from __future__ import annotations

import dataclasses
import keyword
from pathlib import Path

import yaml

from difflab import io
from difflab.errors import DifflabError

REQUIRED = ("name", "description", "foundation", "harness", "tasks", "library_name", "program_kind")
TASK_FIELDS = ("id", "split", "instruction", "solution", "state")


@dataclasses.dataclass
class Domain:
    root: Path
    name: str
    description: str
    foundation: Path
    harness: Path
    tasks_path: Path
    library_name: str
    program_kind: str

    @property
    def foundation_name(self) -> str:
        return self.foundation.name

    @classmethod
    def load(cls, folder: str | Path) -> "Domain":
        root = Path(folder)
        spec_path = root / "domain.yaml"
        if not spec_path.is_file():
            raise DifflabError(f"{spec_path}: no domain.yaml (a libgen domain folder needs one)")
        spec = yaml.safe_load(spec_path.read_text()) or {}
        for key in REQUIRED:
            if not isinstance(spec.get(key), str) or not spec[key].strip():
                raise DifflabError(f"{spec_path}: field '{key}' is missing or not a string")
        foundation = root / spec["foundation"]
        if not (foundation / "__init__.py").is_file():
            raise DifflabError(f"{spec_path}: field 'foundation': {foundation} is not a Python package folder")
        for key in ("harness", "tasks"):
            if not (root / spec[key]).is_file():
                raise DifflabError(f"{spec_path}: field '{key}': {root / spec[key]} does not exist")
        library = spec["library_name"]
        if not library.isidentifier() or keyword.iskeyword(library) or library == foundation.name:
            raise DifflabError(f"{spec_path}: field 'library_name': {library!r} is not a usable package name")
        return cls(root, spec["name"], spec["description"].strip(), foundation, root / spec["harness"],
                   root / spec["tasks"], library, spec["program_kind"].strip())

    def tasks(self, split: str | None = None, limit: int = 0) -> list[dict]:
        """The tasks of `split` (all when None), in file order, the first `limit` (0 = all)."""
        rows, seen = [], set()
        for task in io.read_jsonl(self.tasks_path, required=TASK_FIELDS, line_field="_line"):
            number = task.pop("_line")
            if not isinstance(task["instruction"], str) or not task["instruction"].strip():
                raise DifflabError(f"{self.tasks_path}: record {number} (id {task['id']}): field 'instruction' is empty")
            if not isinstance(task["state"], list):
                raise DifflabError(f"{self.tasks_path}: record {number} (id {task['id']}): field 'state' is not a list")
            if task["id"] in seen:
                raise DifflabError(f"{self.tasks_path}: record {number}: field 'id': {task['id']!r} appears twice")
            seen.add(task["id"])
            if split is None or task["split"] == split:
                rows.append(task)
        if split is not None and not rows:
            raise DifflabError(f"{self.tasks_path}: no task has split {split!r}")
        return rows[:limit] if limit else rows

    def describe(self) -> dict:
        return {"name": self.name, "root": str(self.root), "foundation": self.foundation_name,
                "library_name": self.library_name}
