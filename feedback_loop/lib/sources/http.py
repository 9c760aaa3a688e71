"""HTTP for sources: timeouts, retries with backoff on 429 and 5xx (honouring `Retry-After`), and
errors that name the source, the path and the status. Secrets travel in headers, never in URLs or
messages."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from feedback_loop.lib.landing import RAW_CHARS

RETRIED = frozenset({408, 425, 429, 500, 502, 503, 504})


class SourceUnavailable(RuntimeError):
    """A failure that may pass (a timeout, a 429 or a 5xx after the retries): retry the run later."""


class SourceRejected(RuntimeError):
    """A failure that will not pass by waiting (401, 403, 404, 422...): fix the configuration."""


@dataclass
class Http:
    source: str  # named in every error: "phoenix"
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 1.0  # the first wait; doubled after each retry, with jitter
    max_wait_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.base_url.rstrip("/"), headers=self.headers, timeout=self.timeout_s)

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: dict | list | None = None) -> httpx.Response:
        return self.request("GET", path, params=params)

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """The response of a 2xx; retried on timeouts, connection errors, 429 and 5xx."""
        wait = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                response = self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as err:
                problem = f"{type(err).__name__}"
                retry_after = None
            else:
                if response.is_success:
                    return response
                if response.status_code not in RETRIED:
                    raise SourceRejected(f"{self.source}: {method} {path} answered {response.status_code} {response.reason_phrase}: {_body(response)}")
                problem = f"{response.status_code} {response.reason_phrase}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt == self.retries:
                raise SourceUnavailable(f"{self.source}: {method} {path} failed {self.retries + 1} times, last with {problem}")
            self.sleep(min(self.max_wait_s, retry_after if retry_after is not None else wait * (1 + random.random() / 4)))
            wait *= 2
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _body(response: httpx.Response) -> str:
    return response.text[:300].replace("\n", " ")


def cursor_pages(http: Http, path: str, params: list[tuple[str, str]], what: str, cursor_of: Callable[[dict], str | None]) -> Iterator[tuple[int, list | None, str, str | None]]:
    """Each page of a cursor-paged listing whose items are its `data` list: (page number, the
    items, the raw text of a page that cannot be read, why). `cursor_of` finds the next cursor in
    a page; paging ends when there is none, or at a page that cannot be read."""
    cursor = None
    number = 0
    while True:
        number += 1
        response = http.get(path, params=[*params, *([("cursor", cursor)] if cursor else [])])
        try:
            body = response.json()
        except ValueError:
            yield number, None, response.text[:RAW_CHARS], f"{what} page {number} is not JSON"
            return
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            yield number, None, response.text[:RAW_CHARS], f"{what} page {number} has no data list"
            return
        yield number, data, "", None
        cursor = cursor_of(body)
        if not cursor:
            return
