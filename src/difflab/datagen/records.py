"""Instruction examples with provenance, and `Results`: a list of them that saves, loads, filters,
splits and exports to what finetuning tools read.

An `Example` is (instruction, input, output) plus where it came from: `method` (seed, self_instruct,
evol_instruct, template, constrained, paraphrase, style, domain_transfer, ...), `parent` (the id it was
derived from), `params` (the method's parameters) and `meta` (e.g. which constraints it satisfies).
Its `id` is a hash of instruction, input and output (given when the example is made), so the same
example has the same id in every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator

from difflab import io
from difflab.errors import DifflabError

EXPORT_FORMATS = ("messages", "alpaca")


def example_id(instruction: str, input: str = "", output: str = "") -> str:
    return hashlib.sha256(f"{instruction}\x00{input}\x00{output}".encode()).hexdigest()[:16]


@dataclasses.dataclass
class Example:
    instruction: str
    input: str = ""
    output: str = ""
    method: str = "seed"
    parent: str | None = None
    params: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)
    id: str = ""

    def __post_init__(self):
        if not self.id:
            self.id = example_id(self.instruction, self.input, self.output)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict, where: str = "record") -> "Example":
        if not isinstance(record.get("instruction"), str) or not record["instruction"].strip():
            raise DifflabError(f"{where}: field 'instruction' must be a non-empty string")
        for field in ("input", "output"):
            if record.get(field) is not None and not isinstance(record[field], str):
                raise DifflabError(f"{where}: field '{field}' must be a string")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in known and v is not None}
        for field in ("params", "meta"):
            if isinstance(values.get(field), str):  # Parquet round trip keeps them as JSON text
                values[field] = json.loads(values[field])
        return cls(**values)


class Results:
    """An ordered collection of examples."""

    def __init__(self, examples: Iterable[Example] = ()):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index):
        return self.examples[index]

    def __add__(self, other: "Results") -> "Results":
        return Results(self.examples + list(other))

    def filter(self, predicate: Callable[[Example], bool]) -> "Results":
        return Results(e for e in self.examples if predicate(e))

    def by_method(self, method: str) -> "Results":
        return self.filter(lambda e: e.method == method)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([e.to_dict() for e in self.examples],
                            columns=[f.name for f in dataclasses.fields(Example)])

    # ---- files
    def save(self, path: str | Path) -> Path:
        """JSONL, or Parquet when the name ends in .parquet."""
        path = Path(path)
        if path.suffix == ".parquet":
            frame = self.to_pandas()
            for column in ("params", "meta"):
                frame[column] = [json.dumps(v, sort_keys=True) for v in frame[column]]
            return io.write_parquet(path, frame)
        return io.write_jsonl(path, (e.to_dict() for e in self.examples))

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        path = Path(path)
        if path.suffix == ".parquet":
            import pandas as pd

            if not path.is_file():
                raise DifflabError(f"file not found: {path}")
            rows = pd.read_parquet(path).to_dict("records")
            return cls(Example.from_dict(r, f"{path}: row {i + 1}") for i, r in enumerate(rows))
        records = io.read_jsonl(path, required=("instruction",), line_field="_line")
        return cls(Example.from_dict(r, f"{path}: record {r['_line']}") for r in records)

    # ---- for finetuning tools
    def export(self, path: str | Path, fmt: str = "messages", system: str | None = None) -> Path:
        """`messages` (chat: user = instruction + input, assistant = output) or `alpaca`
        (instruction / input / output) JSONL."""
        if fmt not in EXPORT_FORMATS:
            raise DifflabError(f"datagen: export format must be one of {', '.join(EXPORT_FORMATS)}, got '{fmt}'")
        rows = []
        for e in self.examples:
            if fmt == "alpaca":
                rows.append({"instruction": e.instruction, "input": e.input, "output": e.output})
            else:
                prompt = e.instruction if not e.input else f"{e.instruction}\n\n{e.input}"
                messages = ([{"role": "system", "content": system}] if system else []) + [
                    {"role": "user", "content": prompt}, {"role": "assistant", "content": e.output}]
                rows.append({"messages": messages})
        return io.write_jsonl(path, rows)

    def split(self, validation_fraction: float = 0.1, seed: int = 0) -> tuple["Results", "Results"]:
        """(train, validation), shuffled with `seed`; validation gets round(fraction * n) examples."""
        if not 0.0 <= validation_fraction < 1.0:
            raise DifflabError(f"datagen: validation_fraction must be in [0, 1), got {validation_fraction}")
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        n_val = round(validation_fraction * len(order))
        val = set(order[:n_val])
        return (Results(e for i, e in enumerate(self.examples) if i not in val),
                Results(e for i, e in enumerate(self.examples) if i in val))
