"""``mf2 caption``: AU, emotion and key-AU captions for every image of a manifest."""

import json
from pathlib import Path

import click

from ._common import one_line_errors, progress_bar
from .options import URL, Number, PathType


def _caps(values):
    caps = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in ("au", "emotion", "key_au") or not number.isdigit():
            raise click.BadParameter(f"expected TYPE=N with TYPE in au, emotion, key_au; got {value!r}")
        caps[name] = int(number)
    return caps


@click.command()
@click.option("--manifest", type=PathType(path_type=Path), required=True)
@click.option("--out", type=PathType(dir_okay=False, path_type=Path),
              help="Output manifest, beside --manifest (default: <name>.captioned.jsonl); the input is never rewritten.")
@click.option("--types", default="au,emotion,key_au", show_default=True, help="Comma-separated caption types.")
@click.option("--backend", type=click.Choice(["template", "openai"]), default="template", show_default=True)
@click.option("--model", default="gpt-4o", show_default=True, help="openai: model name.")
@click.option("--base-url", type=URL(), default=None,
              help="openai: endpoint, e.g. http://localhost:8000/v1 (default: OpenAI).")
@click.option("--concurrency", type=Number(int, min=1, max=256), default=4, show_default=True, help="openai: requests in flight.")
@click.option("--max-attempts", type=Number(int, min=1, max=100), default=6, show_default=True)
@click.option("--backoff", type=Number(float, min=0, max=3600), default=1.0, show_default=True,
              help="First retry delay in seconds (doubles each attempt).")
@click.option("--timeout", type=Number(float, min=1, max=86400), default=60.0, show_default=True,
              help="openai: seconds one caption may take in all: its attempts and every wait between them (Retry-After "
                   "included); a stuck or trickling server is cut off.")
@click.option("--max-consecutive-failures", type=Number(int, min=0), default=20, show_default=True,
              help="openai: stop the run when this many captions in a row fail (a server that is down or refuses); "
                   "0 = never. What was answered is cached.")
@click.option("--max-tokens", "caps", multiple=True, help="Token cap override, e.g. au=169 (repeatable).")
@click.option("--cache", "cache_dir", type=PathType(path_type=Path),
              help="openai: answer cache (default: .caption_cache beside the output manifest).")
@click.option("--overwrite", is_flag=True, help="Re-caption rows that already have captions.")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) bad manifest rows instead of stopping.")
@one_line_errors
def caption(manifest, out, types, backend, model, base_url, concurrency, max_attempts, backoff, timeout,
            max_consecutive_failures, caps, cache_dir, overwrite, skip_bad):
    """Write the three caption types (and the 12 per-AU sentences) into a new manifest beside --manifest."""
    from mf2.io import exclusive_outputs, refuse_overlap

    out = out or manifest.with_name(f"{manifest.stem.removesuffix('.captioned')}.captioned{manifest.suffix}")
    refuse_overlap({"--manifest": manifest}, {"--out": out})
    report_path = out.with_name(out.stem + ".caption_report.json")
    with exclusive_outputs({"--out": out}):  # a second mf2 caption into the same --out stops at once
        _caption(manifest, out, report_path, types, backend, model, base_url, concurrency, max_attempts, backoff,
                 timeout, max_consecutive_failures, caps, cache_dir, overwrite, skip_bad)


def _caption(manifest, out, report_path, types, backend, model, base_url, concurrency, max_attempts, backoff, timeout,
             max_consecutive_failures, caps, cache_dir, overwrite, skip_bad):
    from mf2.captions.api import make_captioner
    from mf2.captions.run import caption_manifest
    from mf2.data.manifest import read_manifest, write_manifest
    from mf2.io import atomic_write_text

    if out.exists() and not report_path.exists():
        raise click.ClickException(f"--out {out} exists and was not written by mf2 caption; choose another name")
    m = read_manifest(manifest, skip_bad=skip_bad)
    if out.resolve().parent != m.root.resolve():
        raise click.UsageError("--out must be in the same folder as --manifest (image paths are relative to it)")
    wanted = [t.strip() for t in types.split(",") if t.strip()]
    captioner = make_captioner(backend, model=model, base_url=base_url, timeout=timeout, caps=_caps(caps))
    cache_dir = cache_dir or out.parent / ".caption_cache"
    with progress_bar(len(m.rows) * len(wanted), f"caption ({captioner.name})") as bar:
        rows, report = caption_manifest(m, captioner, wanted, cache_dir=cache_dir, concurrency=concurrency,
                                        max_attempts=max_attempts, backoff=backoff, overwrite=overwrite,
                                        progress=bar.update, max_consecutive_failures=max_consecutive_failures)
    info = {**report.as_dict(), "skipped_rows": m.skipped, "merged_rows": m.merged}
    atomic_write_text(report_path, json.dumps(info, indent=2) + "\n")  # first: it marks the output as ours
    write_manifest(rows, out)
    click.echo(f"{captioner.name}: {report.generated} generated, {report.from_cache} from cache, "
               f"{report.kept} kept, {len(report.failed)} failed, {report.retries} retries -> {out}")
    for line in m.notes():
        click.echo(f"{line}; not in {out}, listed in {report_path}", err=True)
    if report.failed:
        click.echo(f"failures are listed in {report_path}", err=True)
        if not (report.generated or report.from_cache or report.kept):  # nothing captioned: a script must stop
            raise click.ClickException(f"no caption was made: all {len(report.failed)} failed (see {report_path}); "
                                       "the manifest was written without them")
