"""Chat rendering shared by every capability: a conversation -> token ids, which of them the
assistant wrote (end-of-turn token included), and where the first assistant turn starts."""

from __future__ import annotations

import dataclasses

from difflab.errors import DifflabError


@dataclasses.dataclass
class RenderedChat:
    ids: list[int]
    assistant: list[bool]  # token i is part of an assistant turn (its end-of-turn token included)
    prompt_length: int  # tokens before the first assistant turn's content (its header included)


def render_chat(tokenizer, messages: list[dict], where: str = "chat") -> RenderedChat:
    """Tokenize `messages` with the tokenizer's chat template and mark the assistant's tokens."""
    if not tokenizer.chat_template:
        raise DifflabError(f"{where}: the tokenizer has no chat template")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []  # character spans of assistant turns, end-of-turn token included
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(upto) or not upto.startswith(prefix):
            raise DifflabError(f"{where}: the chat template does not render turns as prefixes; cannot mask")
        end = upto.rstrip("\n")  # keep the end-of-turn token, drop the newline after it
        spans.append((len(prefix), len(end)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    assistant = [any(a <= start < b for a, b in spans) for start, _ in enc["offset_mapping"]]
    prompt_length = next((i for i, flag in enumerate(assistant) if flag), len(ids))
    return RenderedChat(ids, assistant, prompt_length)
