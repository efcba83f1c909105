"""LLMClient: the one interface for chat/text completion.

It owns what every backend needs: the response cache (a rerun pays nothing twice), bounded
concurrency and retries with exponential backoff for remote endpoints, token/cost accounting and
progress bars. Backends only turn one request (openai) or a batch (local) into completions.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Iterable, Sequence

import tenacity
from tqdm.auto import tqdm

from difflab import io
from difflab.errors import DifflabError
from difflab.llm.cache import ResponseCache
from difflab.llm.types import Completion, Request, SamplingParams, Usage, cache_key


class LLMClient:
    def __init__(self, backend, cache_dir: str | Path | None = None, *, max_concurrency: int = 4,
                 max_retries: int = 6, backoff_initial_s: float = 1.0, backoff_max_s: float = 30.0,
                 prompt_per_1m: float = 0.0, completion_per_1m: float = 0.0, progress: bool = True):
        self.backend = backend
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.progress = progress
        self.usage = Usage(prompt_per_1m, completion_per_1m)

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> "LLMClient":
        """The client the config's `llm` section describes (see client_from_config)."""
        return client_from_config(config, **kwargs)

    # ------------------------------------------------------------------ public API
    def chat(self, conversations: Sequence[list[dict]], params: SamplingParams | None = None,
             samples: int = 1) -> list[Completion]:
        """Answer each conversation `samples` times (sample indices 0..samples-1), in order."""
        requests = [Request.chat(list(c), sample_index=s) for c in conversations for s in range(samples)]
        return self.complete(requests, params)

    def complete_prompts(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list[Completion]:
        return self.complete([Request(prompt=p) for p in prompts], params)

    def complete(self, requests: Sequence[Request], params: SamplingParams | None = None) -> list[Completion]:
        """Completions for `requests`, in order: cached answers are reused, the rest generated."""
        params = params or SamplingParams()
        identity = self.backend.identity()
        keys = [cache_key(identity, r, params) for r in requests]
        results: list[Completion | None] = [None] * len(requests)
        missing: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                results[i] = Completion(**{**hit, "cached": True, "sample_index": requests[i].sample_index})
            else:
                missing.setdefault(key, []).append(i)  # identical requests are generated once

        todo = [(key, indices[0]) for key, indices in missing.items()]
        if todo:
            start = time.perf_counter()
            for key, completion in self._generate([requests[i] for _, i in todo], [k for k, _ in todo], params):
                if self.cache is not None:
                    self.cache.put(key, {k: v for k, v in completion.to_dict().items() if k != "cached"})
                for i in missing[key]:
                    results[i] = completion
            self.usage.add(generation_seconds=time.perf_counter() - start)
        for completion in results:
            self.usage.record(completion)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    @property
    def context_tokens(self) -> int:
        """How many tokens one request (prompt + answer) may hold: the backend's, else 8192."""
        return int(getattr(self.backend, "context_tokens", 8192))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` for the backend's model (cl100k where the backend has no tokenizer)."""
        counter = getattr(self.backend, "count_tokens", None)
        if counter is not None:
            return counter(text)
        from difflab import models

        return len(models.gpt_encoding().encode(text, disallowed_special=()))

    def write_usage(self, path: str | Path, extra: dict | None = None) -> dict:
        """Token/cost accounting next to the outputs (never the API key)."""
        record = {"backend": self.backend.describe(), "usage": self.usage.to_dict(), **(extra or {})}
        io.write_json(path, record)
        return record

    # ------------------------------------------------------------------ generation
    def _generate(self, requests: list[Request], keys: list[str], params: SamplingParams) -> Iterable[tuple[str, Completion]]:
        if hasattr(self.backend, "generate"):  # batched backend (local)
            for i, completion in self.backend.generate(requests, params):
                self.usage.add(backend_calls=1)
                yield keys[i], completion
            return
        yield from self._generate_concurrently(requests, keys, params)

    def _generate_concurrently(self, requests, keys, params):
        bar = tqdm(total=len(requests), desc=f"{self.backend.kind} requests", unit="req",
                   disable=not self.progress, leave=False)
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = {pool.submit(self._call_with_retries, r, params): k for r, k in zip(requests, keys)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    completion = future.result()
                    bar.update(1)
                    yield futures[future], completion
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                bar.close()

    def _call_with_retries(self, request: Request, params: SamplingParams) -> Completion:
        from difflab.llm.openai_backend import is_transient

        def count_retry(state: tenacity.RetryCallState) -> None:
            self.usage.add(retries=1)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s)
            + tenacity.wait_random(0, self.backoff_initial_s),
            before_sleep=count_retry,
            reraise=True,
        )
        try:
            completion = retrying(self.backend.generate_one, request, params)
        except DifflabError:
            raise
        except Exception as exc:  # after the retries: one line naming the endpoint
            explain = getattr(self.backend, "explain", None)
            raise (explain(exc) if explain else DifflabError(f"{type(exc).__name__}: {exc}")) from None
        self.usage.add(backend_calls=1)
        return completion


def client_from_config(config: dict, *, progress: bool = True, backend=None) -> LLMClient:
    """Build the client the config's `llm` section describes (backend, cache, retries, pricing)."""
    llm = config["llm"]
    if backend is None:
        if llm["backend"] == "local":
            from difflab.llm.local import LocalBackend

            backend = LocalBackend(llm["model"], config, batch_size=llm["local"]["batch_size"],
                                   dtype=llm["local"]["dtype"], device=llm["local"]["device"], progress=progress)
        else:
            from difflab.llm.openai_backend import OpenAIBackend

            o = llm["openai"]
            backend = OpenAIBackend(o["base_url"], o["model"], o["api_key_env"], o["timeout_s"], o["model_path"],
                                    o.get("context_tokens", 128000))
    return LLMClient(
        backend,
        llm["cache_dir"],
        max_concurrency=llm["max_concurrency"],
        max_retries=llm["max_retries"],
        backoff_initial_s=llm["backoff_initial_s"],
        prompt_per_1m=llm["pricing"]["prompt_per_1m"],
        completion_per_1m=llm["pricing"]["completion_per_1m"],
        progress=progress,
    )

