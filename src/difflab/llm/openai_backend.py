"""OpenAIBackend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, llm-katan).

The `openai` package does the HTTP; its own retries are off, because the client retries transient
errors itself (tenacity, exponential backoff) and counts them. The API key comes from an environment
variable and is never logged, cached or written anywhere.
"""

from __future__ import annotations

import os

import openai

from difflab import models
from difflab.errors import DifflabError
from difflab.llm.types import Completion, Request, SamplingParams

TRANSIENT_ERRORS = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,  # includes APITimeoutError and dropped connections
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (408, 409, 425, 429) or (
        isinstance(exc, openai.APIStatusError) and exc.status_code >= 500)


class OpenAIBackend:
    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
                 model_path: str = "", context_tokens: int = 128000):
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise DifflabError(f"openai backend: environment variable {api_key_env} is not set "
                               f"(llm.openai.api_key_env names where the API key is read from)")
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.context_tokens = context_tokens
        self.fingerprint = models.fingerprint(model_path) if model_path else ""
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as a hosted model counts them (cl100k; the endpoint's own tokenizer is unknown)."""
        return len(models.gpt_encoding().encode(text, disallowed_special=()))

    def identity(self) -> dict:
        """What makes an answer: the served weights when known (wherever served), else endpoint + model name."""
        if self.fingerprint:
            return {"backend": "openai", "fingerprint": self.fingerprint}
        return {"backend": "openai", "base_url": self.base_url, "model": self.model}

    def describe(self) -> dict:
        return {"backend": "openai", "base_url": self.base_url, "model": self.model,
                "fingerprint": self.fingerprint, "api_key_env": self.api_key_env}

    def explain(self, exc: BaseException) -> DifflabError:
        """A one-line error for a failure that retrying did not (or cannot) fix."""
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return DifflabError(f"openai backend: {self.base_url} refused the API key from ${self.api_key_env} "
                                f"(HTTP {exc.status_code})")
        if isinstance(exc, openai.NotFoundError):
            return DifflabError(f"openai backend: {self.base_url} has no model '{self.model}' or no chat endpoint "
                                f"(HTTP 404)")
        if isinstance(exc, openai.APIConnectionError):
            return DifflabError(f"openai backend: cannot reach {self.base_url} ({type(exc).__name__})")
        if isinstance(exc, openai.APIStatusError):
            return DifflabError(f"openai backend: {self.base_url} answered HTTP {exc.status_code}")
        return DifflabError(f"openai backend: {type(exc).__name__} from {self.base_url}")

    def generate_one(self, request: Request, params: SamplingParams) -> Completion:
        if request.prefill:
            raise DifflabError("openai backend: a prefilled assistant turn is not part of the chat API; "
                               "use the local backend")
        if request.messages is not None:
            messages = request.message_dicts()
        else:
            messages = [{"role": "user", "content": request.prompt}]
        kwargs = dict(model=self.model, messages=messages, max_tokens=params.max_new_tokens,
                      temperature=params.temperature, top_p=params.top_p,
                      seed=params.seed + request.sample_index)
        if params.stop:
            kwargs["stop"] = list(params.stop)
        response = self.client.chat.completions.create(**kwargs)
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason or "stop",
            sample_index=request.sample_index,
        )
