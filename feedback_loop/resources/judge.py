"""The optional LLM judge: an OpenAI-compatible chat endpoint, off unless a base URL and a model are set."""

from __future__ import annotations

import uuid

import dagster as dg
from upath import UPath

from feedback_loop.lib.sources.http import Http


class Judge(dg.ConfigurableResource):
    """Classifies the negatives the offline path is unsure of (`lib/error_modes/judge.py`).

    Configured in the sources file's `judge` section (docs/configuration.md); the key is read from
    the environment variable the file names. Answers are cached in `cache_folder`, one file per
    content hash, so a rerun asks nothing it asked before."""

    base_url: str = ""  # e.g. https://api.openai.com/v1 or a local server's /v1; empty: off
    model: str = ""
    api_key: str = ""
    max_calls_per_night: int = 200  # requests per run; cached answers are free
    max_confidence: float = 0.6  # rows decided less confidently than this (and unexplained ones) are judged
    timeout_s: float = 60.0
    retries: int = 3  # on timeouts, 429 and 5xx, with backoff
    cache_folder: str = "data/state/judge"

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.model)

    def ask(self, messages: list[dict]) -> str:
        """The text of the endpoint's answer; `SourceUnavailable` / `SourceRejected` (RuntimeErrors) on failure."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        http = Http(source="judge", base_url=self.base_url, headers=headers, timeout_s=self.timeout_s, retries=self.retries)
        try:
            body = {"model": self.model, "messages": messages, "temperature": 0, "response_format": {"type": "json_object"}}
            response = http.request("POST", "/chat/completions", json=body)
        finally:
            http.close()
        try:
            return str(response.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError):
            return ""  # counted as an invalid answer

    def cache_get(self, key: str) -> str | None:
        path = UPath(self.cache_folder) / key[:2] / f"{key}.txt"
        return path.read_text() if path.exists() else None

    def cache_put(self, key: str, content: str) -> None:
        folder = UPath(self.cache_folder) / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(content)
        tmp.rename(folder / f"{key}.txt")
