"""The token-relevance judge: is this token related to what the model was finetuned on?

One prompt and one parser, used by diffmining's relevance grading (`eval.json` next to an ordering)
and by the organisms scoreboard's LLM judge. Both ask through the LLM client with the same sampling
parameters, so a (description, token) question asked by one is a cache hit for the other: with
relevance grading on, the scoreboard's judge of an organism's own topic reuses those answers.

    answers = judge_tokens(client, "cakes are baked at 410 F", [" oven", " car"])
    [parse_yes_no(a.text) for a in answers]   # [True, False] from a sensible judge
"""

from __future__ import annotations

import re

from difflab.llm.types import Completion, SamplingParams

PROMPT = (
    "A language model was finetuned on: {description}\n"
    "Is the token {token!r} related to that topic? Answer with one word: yes or no."
)
MAX_NEW_TOKENS = 4


def parse_yes_no(text: str) -> bool | None:
    """True for an answer that says yes, False for no, None when it says neither."""
    match = re.search(r"\b(yes|no)\b", text.lower())
    return None if match is None else match.group(1) == "yes"


def judge_tokens(client, description: str, tokens: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[Completion]:
    """The judge's answer for each token (greedy, one short answer each), in the tokens' order."""
    if not tokens:
        return []
    prompts = [[{"role": "user", "content": PROMPT.format(description=description, token=token)}] for token in tokens]
    return client.chat(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
