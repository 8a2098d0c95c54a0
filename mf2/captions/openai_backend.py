"""Captions from any OpenAI-compatible chat endpoint (GPT-4o by default; vLLM, Ollama, ...):
the paper's three-stage prompt, the image inline as a data URL, the token caps as max_tokens.

Errors are sorted for the runner: ``TransientError`` (429, 5xx, timeouts, connection) is
retried with backoff; ``MalformedOutput`` is retried then recorded; anything else (bad key,
unknown model) is a ``CaptionError`` that stops the run with one line.
"""

from __future__ import annotations

import base64
import mimetypes
import threading
from pathlib import Path

from mf2.captions.prompts import DEFAULT_VERSION, load_prompt
from mf2.data.labels import TOKEN_CAPS


class CaptionError(ValueError):
    """A failure that retrying cannot fix (authentication, unknown model, bad request)."""


class TransientError(RuntimeError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class MalformedOutput(ValueError):
    """The model answered, but not with a usable caption."""


def parse_retry_after(value, now: float | None = None) -> float | None:
    """A Retry-After header as seconds from now (RFC 9110: seconds, or an HTTP date), or None when
    it says nothing usable. Any value is taken: negative -> 0, NaN or garbage -> None, a date in
    the past -> 0; a huge one stays huge here (the runner caps it inside its deadline)."""
    import math
    import time
    from email.utils import parsedate_to_datetime

    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _retry_after(exc) -> float | None:
    response = getattr(exc, "response", None)
    return parse_retry_after(response.headers.get("retry-after") if response is not None else None)


class OpenAICaptioner:
    cacheable = True

    def __init__(self, model: str = "gpt-4o", base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, prompt_version: str = DEFAULT_VERSION, caps: dict | None = None,
                 temperature: float = 0.2):
        try:
            import openai
        except ImportError:
            raise CaptionError("the openai backend needs the openai package: pip install openai") from None
        if not api_key:
            raise CaptionError("no API key: set OPENAI_API_KEY (any non-empty value for a local server)")
        self._openai = openai
        self.api_key, self.timeout = api_key, timeout
        self.model, self.base_url, self.temperature = model, base_url, temperature
        self.caps = {**TOKEN_CAPS, **(caps or {})}
        self.prompts = {t: load_prompt(t, prompt_version) for t in TOKEN_CAPS}
        self.name = f"openai:{model}"

    def cache_identity(self, caption_type: str) -> dict:
        """What, besides the image and labels, decides the answer (part of the cache key)."""
        return {"model": self.model, "prompt": self.prompts[caption_type].version, "cap": self.caps[caption_type]}

    def caption(self, caption_type: str, row: dict, image_path: Path, timeout: float | None = None) -> str:
        """One request, cut off after ``timeout`` seconds (default: the captioner's)."""
        openai = self._openai
        limit = self.timeout if timeout is None else max(0.01, min(timeout, self.timeout))
        system, user = self.prompts[caption_type].messages(row["emotion"], row)
        data = base64.b64encode(Path(image_path).read_bytes()).decode()
        mime = mimetypes.guess_type(str(image_path))[0] or "image/jpeg"
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": [{"type": "text", "text": user},
                                                 {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}]}]
        # One connection per request and a watchdog that closes it when the whole request has taken
        # `timeout` seconds: the client's own timeout bounds each read, so a server that keeps sending
        # without ever finishing would otherwise hold the run forever.
        http = openai.DefaultHttpxClient(timeout=limit)
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=limit,
                               http_client=http)
        watchdog = threading.Timer(limit, http.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            response = client.chat.completions.create(model=self.model, messages=messages,
                                                      max_tokens=self.caps[caption_type], temperature=self.temperature)
        except Exception as exc:
            if not watchdog.is_alive():  # the deadline closed the connection under the request
                raise TransientError(f"no complete answer within {limit:.3g} s") from None
            self._sort(exc)
        finally:
            watchdog.cancel()
            http.close()
        choices = getattr(response, "choices", None) or []
        text = choices[0].message.content if choices and choices[0].message else None
        if not isinstance(text, str):
            raise MalformedOutput("response has no message text")
        return text

    def _sort(self, exc):
        """Raise ``exc`` again as the runner's kind of error."""
        openai = self._openai
        try:
            raise exc
        except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}", _retry_after(exc)) from None
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                raise TransientError(f"HTTP {exc.status_code}", _retry_after(exc)) from None
            raise CaptionError(f"{self.base_url or 'api.openai.com'} answered HTTP {exc.status_code}: {exc.message}") from None
        except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError, KeyError) as exc:
            # an answer that is not the API's JSON (an HTML page, a proxy's text): the client's
            # parser raises whatever its JSON or model reader raises
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MalformedOutput(f"unreadable response ({type(exc).__name__}: {first})") from None
