"""The one LLM client every capability uses for text generation.

    client.py          LLMClient: requests -> completions; cache, retries, concurrency, usage, progress
    types.py           SamplingParams, Request, Completion, Usage (the client's data types)
    cache.py           ResponseCache: on-disk, one file per key, atomic, safe for concurrent writers
    local.py           LocalBackend: transformers, batched left-padded decoding with a KV cache
    openai_backend.py  OpenAIBackend: any OpenAI-compatible endpoint through the `openai` package
    relevance.py       the token-relevance judge (diffmining's relevance grading and the scoreboard)

Usage:
    client = LLMClient.from_config(config)
    answers = client.chat([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=32))
"""

from difflab.llm.client import LLMClient, client_from_config
from difflab.llm.types import Completion, Request, SamplingParams, Usage

__all__ = ["LLMClient", "client_from_config", "Completion", "Request", "SamplingParams", "Usage"]
