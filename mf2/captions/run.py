"""Captioning a manifest: every requested caption type for every row, with any backend.

* Rows that already hold a caption keep it (unless ``overwrite``).
* Cacheable backends (the OpenAI-compatible one) go through an on-disk cache keyed by the
  image's SHA-256, the caption type, the labels and the backend's identity (model, prompt
  version, token cap). Each answer is stored the moment it arrives (write-then-rename), so a
  killed run loses nothing and a rerun sends only what is still missing.
* Transient errors are retried with exponential backoff (honouring Retry-After, whatever it
  says: a negative, NaN, huge or date value is parsed and capped); malformed answers are retried,
  then recorded as failures and never written as captions. Every caption has a total
  ``deadline``: its attempts, and every back-off between them, end within it (a server that asks
  to wait past it is a failure at once). A server that fails ``max_consecutive_failures``
  captions in a row stops the run with one line (what was answered is cached), so a large
  manifest does not take hours to fail.
* ``au_sentences`` (the 12 per-AU sentences of AU-VL) are derived for rows with AU labels.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mf2.captions.openai_backend import CaptionError, MalformedOutput, TransientError
from mf2.captions.template import au_sentences
from mf2.data.labels import AUS, CAPTION_COLUMN, CAPTION_TYPES, MISSING
from mf2.data.manifest import Manifest
from mf2.io import atomic_write_text, file_digest

_REFUSAL = re.compile(r"\b(i'?m sorry|i cannot|i can'?t|unable to (help|assist|comply)|as an ai)\b", re.I)


def validate_caption(caption_type: str, text, row: dict) -> str:
    """The caption, stripped; MalformedOutput when it cannot be used."""
    if not isinstance(text, str) or not text.strip():
        raise MalformedOutput("empty answer")
    text = text.strip()
    if _REFUSAL.search(text[:200]):
        raise MalformedOutput(f"refusal: {text[:60]!r}")
    if len(text.split()) < 4:
        raise MalformedOutput(f"too short: {text!r}")
    active = [au for au in AUS if row.get(au) == 1]
    mentioned = {f"AU{int(m)}" for m in re.findall(r"\bAU\s?(\d+)\b", text)}
    if caption_type == "au":
        missing = [au for au in active if au not in mentioned]
        if missing:
            raise MalformedOutput(f"AU caption does not describe {', '.join(missing)}")
    elif caption_type == "key_au" and active and not (mentioned & set(active)):
        raise MalformedOutput("key-AU caption names none of the active AUs")
    return text


@dataclass
class CaptionReport:
    backend: str
    requested: int = 0
    from_cache: int = 0
    generated: int = 0
    kept: int = 0
    retries: int = 0
    failed: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"backend": self.backend, "requested": self.requested, "from_cache": self.from_cache,
                "generated": self.generated, "kept_existing": self.kept, "retries": self.retries,
                "failed": len(self.failed), "failures": self.failed}


class CaptionCache:
    """One JSON file per answer under ``root``; written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str):
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text("utf-8"))["caption"]
        except (ValueError, KeyError):  # a foreign or damaged file: ask again
            return None

    def put(self, key: str, caption: str, meta: dict) -> None:
        atomic_write_text(self._path(key), json.dumps({"caption": caption, **meta}, ensure_ascii=False))


def cache_key(image_sha: str, caption_type: str, row: dict, identity: dict) -> str:
    payload = {"image": image_sha, "type": caption_type, "emotion": row["emotion"],
               "aus": [row[a] for a in AUS], **identity}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


MAX_BACKOFF = 60.0  # no single wait between attempts is longer, whatever the server asks


def caption_manifest(manifest: Manifest, captioner, types=CAPTION_TYPES, *, cache_dir=None, concurrency: int = 4,
                     max_attempts: int = 6, backoff: float = 1.0, overwrite: bool = False, progress=None,
                     sleep=time.sleep, clock=time.monotonic, deadline: float | None = None,
                     max_consecutive_failures: int = 20) -> tuple[list[dict], CaptionReport]:
    """Caption every row; returns the new rows (captions + au_sentences) and a report.
    ``deadline``: the seconds one caption may take in all, attempts and back-off included (default:
    the captioner's own timeout, or none for offline captioners)."""
    if deadline is None:
        deadline = getattr(captioner, "timeout", None)
    unknown = [t for t in types if t not in CAPTION_TYPES]
    if unknown:
        raise ValueError(f"types: unknown caption type(s) {', '.join(unknown)} (expected {', '.join(CAPTION_TYPES)})")
    rows = [dict(r) for r in manifest.rows]
    report = CaptionReport(backend=captioner.name)
    needs_emotion = {"emotion", "key_au"}
    jobs = []
    for i, row in enumerate(rows):
        for t in types:
            if row.get(CAPTION_COLUMN[t]) and not overwrite:
                report.kept += 1
            elif t in needs_emotion and row["emotion"] == MISSING:
                report.failed.append({"id": row["id"], "type": t, "reason": "no emotion label"})
            else:
                jobs.append((i, t))
    report.requested = len(jobs)
    cache = CaptionCache(Path(cache_dir)) if captioner.cacheable and cache_dir else None
    lock = threading.Lock()
    rng = random.Random(0)
    hashes: dict[int, str] = {}

    def run(job):
        i, t = job
        row = rows[i]
        image = manifest.image_path(row)
        key = None
        try:
            if cache is not None:
                if i not in hashes:
                    hashes[i] = file_digest(image, None)
                key = cache_key(hashes[i], t, row, captioner.cache_identity(t))
                cached = cache.get(key)
                if cached is not None:
                    return i, t, cached, "cache", None
            last = None
            end = clock() + deadline if deadline is not None else None
            spent = f"no complete answer within the {deadline:g} s deadline" if deadline is not None else ""
            least = min(0.05, deadline / 10) if deadline is not None else 0.0  # the shortest attempt worth making
            for attempt in range(max_attempts):
                left = end - clock() if end is not None else None
                if left is not None and left < least:
                    return i, t, None, "failed", f"{spent} ({last})"
                try:
                    text = validate_caption(t, captioner.caption(t, row, image, timeout=left), row)
                    if cache is not None:
                        cache.put(key, text, {"id": row["id"], "type": t, "backend": captioner.name})
                    return i, t, text, "generated", None
                except TransientError as exc:
                    last = str(exc)
                    asked = exc.retry_after
                    delay = asked if asked is not None else backoff * 2 ** attempt
                    with lock:
                        report.retries += 1
                        jitter = 0.5 + rng.random()
                    if attempt + 1 >= max_attempts:
                        break
                    wait = min(delay * jitter if asked is None else delay, MAX_BACKOFF)
                    left = end - clock() if end is not None else None
                    if left is not None and left < least:
                        return i, t, None, "failed", f"{spent} ({last})"
                    if left is not None and wait >= left:
                        why = f"the server asked to wait {asked:g} s" if asked is not None else f"a {wait:.1f} s back-off"
                        return i, t, None, "failed", f"{why}, past the {deadline:g} s deadline ({last})"
                    sleep(wait)
                except MalformedOutput as exc:
                    last = f"malformed answer: {exc}"
                    with lock:
                        report.retries += 1
            return i, t, None, "failed", f"gave up after {max_attempts} attempts ({last})"
        except OSError as exc:  # unreadable image
            return i, t, None, "failed", f"image: {exc.strerror or exc}"

    streak = [0]  # captions failed in a row (in completion order)

    def record(result):
        i, t, text, how, reason = result
        streak[0] = streak[0] + 1 if text is None and not reason.startswith("image:") else 0
        if text is None:
            report.failed.append({"id": rows[i]["id"], "type": t, "reason": reason})
            if max_consecutive_failures and streak[0] >= max_consecutive_failures:
                raise CaptionError(f"{captioner.name}: {streak[0]} captions failed in a row (last: {reason}); stopping. "
                                   "What was answered is cached: run the same command again to continue")
        else:
            rows[i][CAPTION_COLUMN[t]] = text
            if how == "cache":
                report.from_cache += 1
            else:
                report.generated += 1
        if progress:
            progress(1)

    if captioner.cacheable and concurrency > 1:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            try:
                for future in futures:
                    record(future.result())
            except CaptionError:
                for f in futures:
                    f.cancel()
                raise
    else:
        for job in jobs:
            record(run(job))
    for row in rows:
        if any(row.get(au) != MISSING for au in AUS):
            row["au_sentences"] = au_sentences(row, row.get("caption_au"))
    return rows, report
