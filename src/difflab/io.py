"""The one artifact writer: atomic writes of JSON, JSONL, text, safetensors and Parquet, and readers.

Every write goes to a temporary file in the target's folder and is renamed into place, so a reader
(or a crashed job) never sees half a file and nothing already built is lost on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from difflab.errors import DifflabError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    mode = 0o666 & ~_umask()  # mkstemp makes 0600; outputs get ordinary permissions
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # after the write: some writers (safetensors) recreate the file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DifflabError(f"file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DifflabError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = (), line_field: str | None = None) -> list[dict]:
    """Read a JSONL file; a bad line or a missing required field is an error naming file, line and field.

    With `line_field`, each record also gets its line number under that key (for later errors)."""
    path = Path(path)
    required = list(required)
    if not path.is_file():
        raise DifflabError(f"file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DifflabError(f"{path}: record {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DifflabError(f"{path}: record {lineno}: expected an object, got {type(record).__name__}")
            for field in required:
                if field not in record:
                    raise DifflabError(f"{path}: record {lineno}: missing field '{field}'")
            if line_field:
                record[line_field] = lineno
            records.append(record)
    return records


def read_lines(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Torch tensors, or numpy arrays (then torch is not imported), to a safetensors file, atomically."""
    import numpy as np

    if all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    else:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


_SAFETENSORS_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "int16": "I16",
                       "int32": "I32", "int64": "I64", "uint8": "U8", "bool": "BOOL"}


@contextlib.contextmanager
def safetensors_writer(path: str | os.PathLike, specs: dict, metadata: dict[str, str] | None = None) -> Iterator[dict]:
    """A safetensors file larger than memory, filled in place: yields {name: tensor} views of the file
    (memory-mapped) for specs {name: (torch dtype, shape)}; fill them inside the block. The space is
    reserved up front (posix_fallocate: a full disk fails here, with nothing written, and jobs started
    later see it as used), and the file is renamed into place only if the block succeeds."""
    import mmap

    import numpy as np
    import torch

    header, offset = {}, 0
    width = {name: torch.empty(0, dtype=dtype).element_size() for name, (dtype, _shape) in specs.items()}
    for name in sorted(specs, key=lambda name: -width[name]):  # wider elements first: every tensor aligned
        dtype, shape = specs[name]  # (the format allows no gaps between tensors)
        size = int(np.prod(shape, dtype=np.int64)) * width[name]
        header[name] = {"dtype": _SAFETENSORS_DTYPES[str(dtype).removeprefix("torch.")], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    start = 8 + len(text)
    with atomic_path(path) as tmp, open(tmp, "r+b") as fh:
        fh.write(len(text).to_bytes(8, "little") + text)
        fh.flush()
        if offset:
            try:
                os.posix_fallocate(fh.fileno(), 0, start + offset)
            except OSError as exc:
                raise DifflabError(f"{path}: cannot reserve {(start + offset) / 2**30:.2f} GiB ({exc.strerror})") from None
            mapped = mmap.mmap(fh.fileno(), start + offset)
            buffer = torch.frombuffer(mapped, dtype=torch.uint8)
            views = {name: buffer[start + h["data_offsets"][0]:start + h["data_offsets"][1]].view(specs[name][0]).view(specs[name][1])
                     for name, h in header.items() if name != "__metadata__"}
            try:
                yield views
                mapped.flush()
            finally:
                del views, buffer
                with contextlib.suppress(BufferError):  # a caller still holds a view: closed when it goes
                    mapped.close()
        else:
            yield {name: torch.empty(shape, dtype=dtype) for name, (dtype, shape) in specs.items()}


def read_safetensors(path: str | os.PathLike, framework: str = "pt") -> tuple[dict, dict]:
    """({name: tensor}, metadata) of a safetensors file: torch tensors, or numpy arrays (framework="numpy")."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"file not found: {path}")
    with safe_open(str(path), framework=framework) as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def write_parquet(path: str | os.PathLike, frame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_figure(path: str | os.PathLike, fig, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)
