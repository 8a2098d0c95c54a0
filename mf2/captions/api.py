"""Choosing a captioner by name (the CLI's --backend)."""

from __future__ import annotations

import os

from mf2.captions.openai_backend import OpenAICaptioner
from mf2.captions.template import TemplateCaptioner


def make_captioner(backend: str, *, model: str = "gpt-4o", base_url: str | None = None, timeout: float = 60.0,
                   caps: dict | None = None, prompt_version: str = "v1"):
    if backend == "template":
        return TemplateCaptioner()
    if backend == "openai":
        return OpenAICaptioner(model=model, base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY"),
                               timeout=timeout, caps=caps, prompt_version=prompt_version)
    raise ValueError(f"backend: expected 'template' or 'openai', got {backend!r}")
