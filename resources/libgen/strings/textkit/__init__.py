"""textkit: a minimal foundation for string and list transformations.

A program defines `solve(text)` and returns the transformed value (a string or a list of strings).
The foundation offers only splitting and joining primitives and character classes:

    from textkit import words, unwords, chars, unchars

    def solve(text):
        return unwords(reversed(words(text)))
"""

from __future__ import annotations

VOWELS = "aeiouAEIOU"


def chars(text: str) -> list[str]:
    """The characters of `text`."""
    return list(text)


def unchars(parts) -> str:
    """Characters joined back into a string."""
    return "".join(parts)


def words(text: str) -> list[str]:
    """The whitespace-separated words of `text`."""
    return text.split()


def unwords(parts) -> str:
    """Words joined by single spaces."""
    return " ".join(parts)


def lines(text: str) -> list[str]:
    return text.split("\n")


def unlines(parts) -> str:
    return "\n".join(parts)


def is_vowel(char: str) -> bool:
    return len(char) == 1 and char in VOWELS


def is_digit(char: str) -> bool:
    return len(char) == 1 and char.isdigit()


__all__ = ["VOWELS", "chars", "unchars", "words", "unwords", "lines", "unlines", "is_vowel", "is_digit"]
