"""Stage 1: read every training instruction by hierarchical summarization.

Instructions are cut into batches of at most `batch_size` items and at most as many tokens as the
model's context leaves after the prompt and the answer (a small local model gets smaller batches).
Each batch gets one summary; summaries are grouped into meta-batches of `meta_batch_size` (cut the same
way) and summarized again, level after level, until one remains; a final synthesis turns it into the
API proposal. All calls of a level go to the client at once (it batches or runs them concurrently).
Every summary records the instruction ids it covers, so coverage is checked, not assumed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from difflab.errors import DifflabError
from difflab.llm import SamplingParams


@dataclasses.dataclass
class Summary:
    level: int  # 1 = summary of instructions, 2.. = summaries of summaries
    index: int
    text: str
    members: list  # ids of the instructions (level 1) or indices of the summaries (higher levels) it read
    covers: list  # instruction ids it covers
    prompt_tokens: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cut_batches(items: Sequence[str], max_items: int, max_tokens: int, count_tokens: Callable[[str], int],
                what: str = "item") -> list[list[int]]:
    """Greedy consecutive batches: at most `max_items` items and `max_tokens` tokens each (indices)."""
    batches, current, used = [], [], 0
    for i, text in enumerate(items):
        cost = count_tokens(text) + 1
        if cost > max_tokens:
            raise DifflabError(f"{what} {i + 1} needs {cost} tokens, more than the {max_tokens} a batch may hold "
                               f"in this model's context (shorten it, or use a model with a longer context)")
        if current and (len(current) >= max_items or used + cost > max_tokens):
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += cost
    if current:
        batches.append(current)
    return batches


class Discovery:
    """The summarization tree over a list of (id, instruction) pairs."""

    def __init__(self, client, params: SamplingParams, *, batch_size: int, meta_batch_size: int,
                 batch_prompt: Callable[[list[str]], str], meta_prompt: Callable[[list[str]], str],
                 system: str = ""):
        self.client = client
        self.params = params
        self.batch_size = batch_size
        self.meta_batch_size = meta_batch_size
        self.batch_prompt = batch_prompt
        self.meta_prompt = meta_prompt
        self.system = system

    def _budget(self, make_prompt: Callable[[list[str]], str]) -> int:
        """Tokens the items of one prompt may take: the context less the empty prompt and the answer."""
        overhead = self.client.count_tokens(self.system + make_prompt([])) + 16
        budget = self.client.context_tokens - self.params.max_new_tokens - overhead
        if budget < 16:
            raise DifflabError(f"the model's context ({self.client.context_tokens} tokens) leaves no room for tasks "
                               f"after a prompt of {overhead} and an answer of {self.params.max_new_tokens} tokens")
        return budget

    def _ask(self, prompts: list[str]) -> list:
        conversations = [([{"role": "system", "content": self.system}] if self.system else [])
                         + [{"role": "user", "content": p}] for p in prompts]
        return self.client.chat(conversations, self.params)

    def run(self, instructions: Sequence[tuple[str, str]]) -> list[list[Summary]]:
        """Levels of summaries, the last one holding exactly one."""
        if not instructions:
            raise DifflabError("stage 1 has no training instructions to read")
        ids = [i for i, _ in instructions]
        texts = [t for _, t in instructions]
        batches = cut_batches(texts, self.batch_size, self._budget(self.batch_prompt), self.client.count_tokens,
                              "instruction")
        prompts = [self.batch_prompt([texts[i] for i in batch]) for batch in batches]
        answers = self._ask(prompts)
        level = [Summary(1, n, a.text.strip(), [ids[i] for i in batch], [ids[i] for i in batch], a.prompt_tokens)
                 for n, (batch, a) in enumerate(zip(batches, answers))]
        levels = [level]
        while len(level) > 1:
            rendered = [s.text or "(empty summary)" for s in level]
            groups = cut_batches(rendered, self.meta_batch_size, self._budget(self.meta_prompt),
                                 self.client.count_tokens, "summary")
            if len(groups) == len(level):  # each summary alone fills a batch: merge pairs to make progress
                raise DifflabError("summaries are too long to group in this model's context; lower "
                                   "sampling.max_new_tokens of stage 1 or use a model with a longer context")
            answers = self._ask([self.meta_prompt([rendered[i] for i in group]) for group in groups])
            level = [Summary(levels[-1][0].level + 1, n, a.text.strip(), list(group),
                             [c for i in group for c in level[i].covers], a.prompt_tokens)
                     for n, (group, a) in enumerate(zip(groups, answers))]
            levels.append(level)
        return levels


def coverage(levels: list[list[Summary]], ids: Sequence[str]) -> dict:
    """Did every instruction reach the top, read exactly once at level 1?"""
    first = [i for s in levels[0] for i in s.members]
    top = set(levels[-1][0].covers)
    return {"instructions": len(ids), "read_at_level_1": len(set(first)), "read_twice": len(first) - len(set(first)),
            "missing": sorted(set(ids) - set(first)), "reach_top": len(top & set(ids)),
            "complete": set(first) == set(ids) == top and len(first) == len(set(first))}
