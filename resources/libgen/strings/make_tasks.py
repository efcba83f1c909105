"""Writes tasks.jsonl for the textkit domain: string/list transformations, each with inputs, a
reference program on the foundation alone, and the outputs it produces (split train/dev/test).

    python resources/libgen/strings/make_tasks.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

INPUTS = ["hello world", "The quick brown fox jumps", "data science at 9 am", "a bb ccc dddd",
          "Snakemake runs 3 rules", "keep it simple", "level noon racecar", "abc 123 xyz 7"]
HEADER = "from textkit import chars, unchars, words, unwords, is_vowel, is_digit\n\n\ndef solve(text):\n"

TASKS = [
    ("Reverse the order of the words.", "return unwords(list(reversed(words(text))))"),
    ("Reverse every word but keep the word order.", "return unwords([unchars(reversed(chars(w))) for w in words(text)])"),
    ("Reverse the whole string.", "return unchars(reversed(chars(text)))"),
    ("Remove all vowels.", "return unchars([c for c in chars(text) if not is_vowel(c)])"),
    ("Keep only the vowels.", "return unchars([c for c in chars(text) if is_vowel(c)])"),
    ("Replace every digit with '#'.", "return unchars(['#' if is_digit(c) else c for c in chars(text)])"),
    ("Remove all digits.", "return unchars([c for c in chars(text) if not is_digit(c)])"),
    ("Capitalize the first letter of every word.", "return unwords([w[:1].upper() + w[1:] for w in words(text)])"),
    ("Make the whole text upper case.", "return text.upper()"),
    ("Make the whole text lower case.", "return text.lower()"),
    ("Swap the case of every letter.", "return text.swapcase()"),
    ("Return the list of words sorted alphabetically.", "return sorted(words(text))"),
    ("Return the words sorted by length, shortest first, keeping ties in order.", "return sorted(words(text), key=len)"),
    ("Return the words longer than three letters.", "return [w for w in words(text) if len(w) > 3]"),
    ("Return the first letter of each word, joined into one string.", "return unchars([w[0] for w in words(text)])"),
    ("Return the last letter of each word, joined into one string.", "return unchars([w[-1] for w in words(text)])"),
    ("Count the words and return the count as a string.", "return str(len(words(text)))"),
    ("Count the vowels and return the count as a string.", "return str(sum(1 for c in chars(text) if is_vowel(c)))"),
    ("Return the longest word (the first one on ties).", "return max(words(text), key=len)"),
    ("Return the shortest word (the first one on ties).", "return min(words(text), key=len)"),
    ("Join the words with dashes instead of spaces.", "return '-'.join(words(text))"),
    ("Join the words with underscores and make them lower case.", "return '_'.join(w.lower() for w in words(text))"),
    ("Turn the text into camelCase.", "ws = [w.lower() for w in words(text)]\n    return unchars([ws[0]] + [w[:1].upper() + w[1:] for w in ws[1:]])"),
    ("Double every character.", "return unchars([c + c for c in chars(text)])"),
    ("Remove the spaces.", "return unchars([c for c in chars(text) if c != ' '])"),
    ("Return the words that are palindromes.", "return [w for w in words(text) if w == w[::-1]]"),
    ("Return the words in reverse alphabetical order.", "return sorted(words(text), reverse=True)"),
    ("Remove duplicate characters, keeping the first occurrence of each.", "seen = []\n    for c in chars(text):\n        if c not in seen:\n            seen.append(c)\n    return unchars(seen)"),
    ("Run-length encode the text, e.g. 'aab' becomes 'a2b1'.", "out, prev, n = [], None, 0\n    for c in chars(text):\n        if c == prev:\n            n += 1\n        else:\n            if prev is not None:\n                out.append(prev + str(n))\n            prev, n = c, 1\n    if prev is not None:\n        out.append(prev + str(n))\n    return unchars(out)"),
    ("Rotate the words left by one: the first word moves to the end.", "ws = words(text)\n    return unwords(ws[1:] + ws[:1])"),
    ("Return every second word, starting with the first.", "return words(text)[::2]"),
    ("Replace every vowel with '*'.", "return unchars(['*' if is_vowel(c) else c for c in chars(text)])"),
    ("Return the length of each word as a list of strings.", "return [str(len(w)) for w in words(text)]"),
    ("Wrap every word in square brackets.", "return unwords(['[' + w + ']' for w in words(text)])"),
    ("Return the text with its words in upper case if they have more than four letters.", "return unwords([w.upper() if len(w) > 4 else w for w in words(text)])"),
    ("Shift every letter one place forward in the alphabet (z wraps to a), keep other characters.", "out = []\n    for c in chars(text):\n        if 'a' <= c <= 'z':\n            out.append(chr((ord(c) - 97 + 1) % 26 + 97))\n        elif 'A' <= c <= 'Z':\n            out.append(chr((ord(c) - 65 + 1) % 26 + 65))\n        else:\n            out.append(c)\n    return unchars(out)"),
    ("Return the digits in the text, in order, as one string.", "return unchars([c for c in chars(text) if is_digit(c)])"),
    ("Return the unique words in order of first appearance, lower-cased.", "out = []\n    for w in words(text):\n        if w.lower() not in out:\n            out.append(w.lower())\n    return out"),
    ("Interleave the characters of the first and second word.", "ws = words(text) + ['', '']\n    a, b = ws[0], ws[1]\n    return unchars([x + y for x, y in zip(a, b)]) + a[len(b):] + b[len(a):]"),
    ("Return the text repeated twice with a space between.", "return text + ' ' + text"),
]


def main() -> None:
    import textkit  # noqa: F401  (the reference programs import it)

    rng = random.Random(7)
    tasks = []
    for i, (instruction, body) in enumerate(TASKS):
        source = HEADER + "    " + body + "\n"
        namespace = {"__name__": "solution"}
        exec(compile(source, "<reference>", "exec"), namespace)
        inputs = rng.sample(INPUTS, 4)
        state = [[j, namespace["solve"](text)] for j, text in enumerate(inputs)]
        tasks.append({"instruction": instruction, "inputs": inputs, "solution": source, "state": state})
    rng.shuffle(tasks)
    with open(HERE / "tasks.jsonl", "w") as f:
        for i, task in enumerate(tasks):
            split = "train" if i < 28 else "dev" if i < 34 else "test"
            f.write(json.dumps({"id": f"str-{i:03d}", "split": split, **task}) + "\n")
    print(f"wrote {len(tasks)} tasks")


if __name__ == "__main__":
    main()
