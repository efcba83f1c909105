"""Data types of the LLM client: what is asked, how it is sampled, what comes back, what it cost."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from typing import Any


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Every parameter that changes an answer; all of them enter the cache key."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 50  # 0 = whole vocabulary
    seed: int = 0
    stop: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, section: dict | None, **overrides) -> "SamplingParams":
        values = {f.name: (section or {}).get(f.name) for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if v is not None}
        values.update(overrides)
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return cls(**values)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclasses.dataclass(frozen=True)
class Request:
    """One generation: chat `messages` (role/content dicts) or a raw `prompt`, and a sample index.
    `prefill` (chat only) is the start of the assistant's answer: the model continues it, and the
    completion's text is what comes after it."""

    messages: tuple | None = None
    prompt: str | None = None
    sample_index: int = 0
    prefill: str = ""

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of messages or prompt")
        if self.prefill and self.messages is None:
            raise ValueError("a prefill continues a chat's assistant turn; a raw prompt already is the prefix")
        if self.messages is not None:
            frozen = tuple(tuple(sorted(dict(m).items())) for m in self.messages)
            object.__setattr__(self, "messages", frozen)

    @classmethod
    def chat(cls, messages: list[dict], sample_index: int = 0, prefill: str = "") -> "Request":
        return cls(messages=tuple(messages), sample_index=sample_index, prefill=prefill)

    def message_dicts(self) -> list[dict]:
        return [dict(m) for m in self.messages or ()]

    def payload(self) -> dict:
        if self.messages is not None:
            return {"messages": self.message_dicts(), **({"prefill": self.prefill} if self.prefill else {})}
        return {"prompt": self.prompt}


@dataclasses.dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    sample_index: int = 0
    cached: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cache_key(backend_identity: dict, request: Request, params: SamplingParams) -> str:
    """sha256 of model identity (incl. weights fingerprint) + messages + every sampling param + sample index."""
    blob = json.dumps(
        {
            "model": backend_identity,
            "request": request.payload(),
            "sample_index": request.sample_index,
            "params": dataclasses.asdict(params),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Usage:
    """Thread-safe token and cost accounting of one client."""

    def __init__(self, prompt_per_1m: float = 0.0, completion_per_1m: float = 0.0):
        self.prompt_per_1m = prompt_per_1m
        self.completion_per_1m = completion_per_1m
        self._lock = threading.Lock()
        self.requests = 0
        self.cache_hits = 0
        self.backend_calls = 0
        self.retries = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.generation_seconds = 0.0
        self._started = time.perf_counter()

    def record(self, completion: Completion) -> None:
        with self._lock:
            self.requests += 1
            if completion.cached:
                self.cache_hits += 1
            else:
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @property
    def cost(self) -> float:
        return (self.prompt_tokens * self.prompt_per_1m + self.completion_tokens * self.completion_per_1m) / 1e6

    def to_dict(self) -> dict[str, Any]:
        seconds = self.generation_seconds
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "backend_calls": self.backend_calls,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
            "generation_seconds": round(seconds, 3),
            "completion_tokens_per_second": round(self.completion_tokens / seconds, 2) if seconds else None,
        }
