"""Every prompt libgen sends, and fitting a prompt into the model's context.

Prompts ask for machine-readable answers (bullets; `## module `name`` headings with signatures in
python code blocks; one python code block for code), and every parser of an answer tolerates a model
that ignores the format: the stage then records what it could not use instead of failing.
"""

from __future__ import annotations

import re

from difflab.errors import DifflabError

SYSTEM = "You are an expert Python library designer. Answer concisely and follow the requested format exactly."

BATCH = """The foundation library `{foundation}` offers only these primitives:
{api}
Below are {n} tasks from a training set; each is solved by a short program on top of `{foundation}`.
{tasks}
What higher-level operations and patterns do these tasks need that the foundation does not offer directly?
Answer with short bullet points, the most frequent need first."""

META = """Below are {n} summaries, each listing the operations a group of tasks needs.
{summaries}
Merge them into one list of needed operations, most frequent first; drop duplicates. Answer with short bullet points."""

SYNTHESIS = """Design the API of a Python package `{library}` built on the foundation `{foundation}`:
{api}
Domain: {description}
The tasks of the training set need these operations:
{summary}
Write the proposal in markdown. For every module write a heading `## module `name``, one sentence on its
purpose, then a python code block with one signature per line, for example:
## module `shapes`
Lines and regions.
```python
def draw_line(start, direction, length, color):
```
Propose at most {max_functions} functions in total, the most useful first."""

REFINE = """Here is the current API proposal for the package `{library}` (built on `{foundation}`):
{proposal}
Here are {n} tasks the API must make easy to solve:
{tasks}
First write `Gaps:` with bullet points for operations these tasks need that the API lacks, then `Redundancies:`
with bullet points for functions that overlap. Then write `Revised proposal:` followed by the whole revised
proposal in the same format (## module `name` headings, signatures in python code blocks)."""

IMPLEMENT = """Write the Python module `{library}/{module}.py`. It builds on the foundation package `{foundation}`:
{api}
Domain: {description}
The module must define exactly these, with these parameters:
```python
{signatures}
```
{notes}
Import what you need from `{foundation}` (for example `from {foundation} import Tile`). Answer with the whole
module in one python code block."""

REPAIR = """This module `{library}/{module}.py` failed its check:
```python
{code}
```
Error: {error}
The module must define, with these parameters:
```python
{signatures}
```
Fix it. Answer with the whole corrected module in one python code block."""

GUIDE = """Write a short usage guide for the module `{library}.{module}`:
```python
{signatures}
```
Domain: {description}
Explain in one sentence what each function is for and give one short example program."""

SYSTEM_PROMPT = """You write {program_kind}.
Domain: {description}
{library_line}
Reference of everything you may use:
{reference}
Answer with one python code block and nothing else."""

PROGRAM = """Task: {instruction}
Write the program."""

EXTEND = """The package `{library}` (built on `{foundation}`) offers:
{api}
Programs written with it failed on these tasks:
{failures}
Propose new functions that would make tasks like these easy. Write them under the heading
## module `{module}`
as signatures in a python code block, one per line. Do not repeat functions the package already has."""


def numbered(items) -> str:
    return "\n".join(f"{i}. {text}" for i, text in enumerate(items, 1))


def extract_code(text: str) -> str | None:
    """The first python code block of an answer (or a bare answer that is plainly code); None if none."""
    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)```", text, re.DOTALL)
    for block in blocks:  # the first block that is code, not a shell line or an output sample
        if re.search(r"^(from |import |def |class |with |for |if |[A-Za-z_]\w*\s*=)", block, re.MULTILINE):
            return block.strip() + "\n"
    if blocks and blocks[0].strip():
        return blocks[0].strip() + "\n"
    unterminated = re.search(r"```(?:python|py)?[ \t]*\n(.*)$", text, re.DOTALL)
    if unterminated and unterminated.group(1).strip():
        return unterminated.group(1).strip() + "\n"
    stripped = text.strip()
    if re.match(r"^(from |import |def |class |with |for |#)", stripped):
        return stripped + "\n"
    return None


def trim_incomplete(code: str) -> str:
    """An answer cut off by the length limit, less its unfinished last top-level statement (so the
    definitions before it still count); unchanged when it parses or no cut makes it parse."""
    import ast

    try:
        ast.parse(code)
        return code
    except SyntaxError:
        pass
    lines = code.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() and not line[0].isspace()]
    for start in reversed(starts):
        if start == 0:
            break
        candidate = "\n".join(lines[:start]).rstrip() + "\n"
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return code


def fit(count_tokens, template: str, budget: int, elastic: str, **parts) -> str:
    """Fill `template`; if it is over `budget` tokens, shorten the part named `elastic` (from its end)
    until it fits. Raises DifflabError when even an empty elastic part does not fit."""
    text = template.format(**parts)
    tokens = count_tokens(text)
    if tokens <= budget:
        return text
    body = parts[elastic]
    if count_tokens(template.format(**{**parts, elastic: ""})) > budget:
        raise DifflabError(f"a libgen prompt does not fit in the model's context ({budget} tokens left for it) even "
                           f"without its {elastic}; use a model with a longer context or lower max_new_tokens")
    low, high = 0, len(body)
    while low < high:  # the longest prefix that fits
        mid = (low + high + 1) // 2
        if count_tokens(template.format(**{**parts, elastic: body[:mid] + "\n[...]"})) <= budget:
            low = mid
        else:
            high = mid - 1
    return template.format(**{**parts, elastic: body[:low] + "\n[...]"})
