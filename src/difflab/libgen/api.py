"""What a package offers, and what a proposal asks for.

`package_api` reads a package's public API from its source with `ast` (generated code is never imported
into the workflow's process): functions with their parameters and first docstring line, classes with
their constructor and public methods, upper-case constants. `format_api` renders it as the reference
text prompts and docs use.

`parse_proposal` reads an API proposal in markdown: `## module `name`` headings, each followed by
Python signatures (`def name(params)`, `class Name(params)`), usually in code blocks. Signatures under
no module heading go to a module `core`. A proposal with no signature at all parses to no modules.
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
import re
from pathlib import Path


@dataclasses.dataclass
class Signature:
    name: str
    params: list[str]
    text: str  # "def draw_line(start, direction, length, color)"
    doc: str = ""
    kind: str = "function"  # function | class

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Module:
    name: str
    signatures: list[Signature]
    text: str = ""  # the proposal's section of this module

    def to_dict(self) -> dict:
        return {"name": self.name, "signatures": [s.to_dict() for s in self.signatures], "text": self.text}

    @classmethod
    def from_dict(cls, record: dict) -> "Module":
        return cls(record["name"], [Signature(**s) for s in record["signatures"]], record.get("text", ""))


# ---------------------------------------------------------------------------- package API (ast)
def _params(args: ast.arguments) -> list[str]:
    names = [a.arg for a in args.posonlyargs + args.args]
    if args.vararg:
        names.append("*" + args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append("**" + args.kwarg.arg)
    return names


def _first_line(node) -> str:
    doc = ast.get_docstring(node) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def module_api(source: str) -> dict:
    """Public functions, classes and constants of one module's source (empty on a syntax error)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {"functions": [], "classes": [], "constants": [], "doc": ""}
    functions, classes, constants = [], [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            functions.append({"name": node.name, "params": _params(node.args),
                              "signature": f"def {node.name}({ast.unparse(node.args)})", "doc": _first_line(node)})
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            methods, init = [], []
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if item.name == "__init__":
                        init = [p for p in _params(item.args) if p != "self"]
                    elif not item.name.startswith("_"):
                        prop = any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)
                        params = [p for p in _params(item.args) if p not in ("self", "cls")]
                        methods.append({"name": item.name, "property": prop, "doc": _first_line(item),
                                        "signature": item.name if prop else f"{item.name}({', '.join(params)})"})
            classes.append({"name": node.name, "params": init, "signature": f"class {node.name}({', '.join(init)})",
                            "doc": _first_line(node), "methods": methods})
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper() and not name.startswith("_"):
                constants.append({"name": name, "value": ast.unparse(node.value)[:200]})
    return {"functions": functions, "classes": classes, "constants": constants, "doc": ast.get_docstring(tree) or ""}


def package_api(package_dir: str | Path) -> dict:
    """{module name: module_api} for the package's __init__ and its public modules."""
    package_dir = Path(package_dir)
    api = {}
    for path in sorted(package_dir.glob("*.py")):
        if path.name != "__init__.py" and path.name.startswith("_"):
            continue
        name = package_dir.name if path.name == "__init__.py" else f"{package_dir.name}.{path.stem}"
        api[name] = module_api(path.read_text())
    return api


def api_names(api: dict) -> list[str]:
    return sorted({item["name"] for module in api.values() for kind in ("functions", "classes", "constants")
                   for item in module[kind]})


def format_api(api: dict, with_docs: bool = True) -> str:
    """The API as compact reference text: one line per function, class, method and constant."""
    lines = []
    for module, entry in api.items():
        if not (entry["functions"] or entry["classes"] or entry["constants"]):
            continue
        lines.append(f"# {module}")
        for const in entry["constants"]:
            lines.append(f"{const['name']} = {const['value']}")
        for cls in entry["classes"]:
            lines.append(cls["signature"] + (f"  # {cls['doc']}" if with_docs and cls["doc"] else ""))
            for method in cls["methods"]:
                lines.append(f"    .{method['signature']}" + (f"  # {method['doc']}" if with_docs and method["doc"] else ""))
        for fn in entry["functions"]:
            lines.append(fn["signature"] + (f"  # {fn['doc']}" if with_docs and fn["doc"] else ""))
        lines.append("")
    return "\n".join(lines).strip() + "\n"


# ---------------------------------------------------------------------------- proposals
HEADING = re.compile(r"^\s{0,3}#{1,4}\s+(?:module\s*[:\-]?\s*)?`?([A-Za-z_][\w.]*)`?(?:\.py)?\s*(?:[:\-(].*)?$",
                     re.IGNORECASE)
DEF = re.compile(r"^\s*(?:[-*]\s*)?`?\s*(?:async\s+)?(def|class)\s+([A-Za-z_]\w*)\s*(\((.*?)\))?\s*(?:->\s*([^:`]+?))?\s*:?\s*`?\s*$")


def module_name(heading: str) -> str | None:
    name = re.sub(r"[^a-z0-9_]", "_", heading.lower().split(".")[-1]).strip("_")
    if not name or keyword.iskeyword(name) or not name.isidentifier():
        return None
    return name


def parse_params(text: str) -> list[str] | None:
    try:
        node = ast.parse(f"def f({text}): pass").body[0]
    except SyntaxError:
        return None
    return [p for p in _params(node.args) if p not in ("self", "cls")]


def parse_proposal(text: str, reserved: tuple[str, ...] = ()) -> list[Module]:
    """Modules and their signatures from a markdown proposal (duplicate names: the first wins)."""
    sections: list[tuple[str, list[str]]] = [("core", [])]
    for line in text.splitlines():
        heading = HEADING.match(line)
        if heading and not line.lstrip().startswith(("def ", "class ")):
            name = module_name(heading.group(1))
            if name and name not in reserved:
                sections.append((name, [line]))
                continue
        sections[-1][1].append(line)
    modules: dict[str, Module] = {}
    seen: set[str] = set()
    for name, lines in sections:
        signatures = []
        for line in lines:
            match = DEF.match(line)
            if not match:
                continue
            kind, fname, params_text = match.group(1), match.group(2), match.group(4) or ""
            params = parse_params(params_text)
            if params is None or fname in seen or fname.startswith("_"):
                continue
            seen.add(fname)
            doc = ""
            signatures.append(Signature(fname, params, f"{kind} {fname}({params_text.strip()})", doc,
                                        "class" if kind == "class" else "function"))
        if signatures:
            module = modules.setdefault(name, Module(name, [], ""))
            module.signatures += signatures
            module.text = (module.text + "\n" + "\n".join(lines)).strip()
    return list(modules.values())


def render_modules(modules: list[Module]) -> str:
    """Modules as a canonical proposal (what a parsed proposal says, in the format prompts ask for)."""
    parts = []
    for module in modules:
        parts.append(f"## module `{module.name}`\n\n```python")
        parts += [s.text for s in module.signatures]
        parts.append("```\n")
    return "\n".join(parts)
