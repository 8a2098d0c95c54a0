"""``mf2 build-dataset``: an MFA-style dataset from Aff-Wild2/ABAW or any labelled manifest."""

from pathlib import Path

import click

from ._common import one_line_errors
from .options import Number, PathType


@click.command("build-dataset")
@click.option("--affwild2", "root", type=PathType(path_type=Path), help="Aff-Wild2 root (annotations + cropped_aligned).")
@click.option("--manifest", type=PathType(path_type=Path), help="Any labelled manifest (.jsonl or .csv) instead.")
@click.option("--out", type=PathType(path_type=Path), required=True, help="Output folder.")
@click.option("--per-class", type=Number(int, min=1), default=None,
              help="Target images per emotion class (default: the smallest class).")
@click.option("--val-fraction", type=Number(float, min=0, max=1, max_open=True), default=0.1, show_default=True,
              help="Share of images and videos in the validation split.")
@click.option("--test-fraction", type=Number(float, min=0, max=1, max_open=True), default=0.0, show_default=True,
              help="Share of images and videos held out as a test split (other recordings than val's); "
                   "training picks its best epoch and thresholds on val, evaluate scores test.")
@click.option("--seed", type=Number(int), default=0, show_default=True)
@click.option("--annotations", type=PathType(path_type=Path), help="Annotation folder, when ROOT holds several editions.")
@click.option("--frames", type=PathType(path_type=Path), help="cropped_aligned folder, when not under ROOT.")
@click.option("--keep-splits", is_flag=True, help="Keep the manifest's own split column instead of re-splitting.")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) bad manifest rows instead of stopping.")
@one_line_errors
def build_dataset(root, manifest, out, per_class, val_fraction, test_fraction, seed, annotations, frames, keep_splits, skip_bad):
    """Filter, balance the 8 emotions, split by video, write manifest.jsonl and stats.json."""
    from mf2.data.affwild2 import read_affwild2
    from mf2.data.manifest import read_manifest
    from mf2.data.mfa import PAPER, build_mfa, summary_line
    from mf2.io import exclusive_outputs

    if bool(root) == bool(manifest):
        raise click.UsageError("give exactly one of --affwild2 ROOT or --manifest M")
    inputs = {"--affwild2": root, "--annotations": annotations, "--frames": frames, "--manifest": manifest}
    inputs = {k: v for k, v in inputs.items() if v}
    if root:
        rows, report, source = read_affwild2(root, annotations, frames)
        dropped = {k: v for k, v in report.frames.items() if k not in ("annotated", "kept")}
        source = {"type": "affwild2", **source, **report.as_dict()}
    else:
        m = read_manifest(manifest, skip_bad=skip_bad)
        rows = [{**r, "image": str(m.image_path(r))} for r in m.rows]
        dropped = {**({"bad_rows": len(m.skipped)} if m.skipped else {}),
                   **({"same_image_rows": len(m.merged)} if m.merged else {})}
        source = {"type": "manifest", "path": str(manifest), "skipped_rows": m.skipped, "merged_rows": m.merged}
    with exclusive_outputs({"--out": out}):  # a second build into the same --out stops at once
        stats = build_mfa(rows, out, per_class=per_class, val_fraction=val_fraction, seed=seed, keep_splits=keep_splits,
                          source=source, dropped=dropped, inputs=inputs, test_fraction=test_fraction)
    click.echo(stats["summary"])
    click.echo(f"paper (MFA): {summary_line({**PAPER, 'splits': {k: PAPER[k] for k in ('train', 'val')}})}")
    if stats["dropped"]:
        click.echo("dropped: " + ", ".join(f"{k} {v:,}" for k, v in stats["dropped"].items()))
    for split, short in stats["per_class_shortfall"].items():
        click.echo(f"{split}: fewer than {stats['per_class_target'][split]} images for " +
                   ", ".join(f"{k} (short {v})" for k, v in short.items()))
    click.echo(f"wrote {out / 'manifest.jsonl'} and {out / 'stats.json'}")
