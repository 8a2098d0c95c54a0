"""``mf2 extract-features``: frozen vision and text features of a manifest into a Zarr store."""

from pathlib import Path

import click

from ._common import one_line_errors, progress_bar
from .options import PathType, config_options, section


@click.command("extract-features")
@click.option("--manifest", type=PathType(path_type=Path), required=True)
@click.option("--out", type=PathType(path_type=Path), required=True, help="Zarr store to write (resumed if present).")
@config_options("extract")
@click.option("--overwrite", is_flag=True, help="Delete an existing store and start again.")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) bad manifest rows instead of stopping.")
@one_line_errors
def extract_features(manifest, out, overwrite, skip_bad, **options):
    """Faces -> landmarks -> frozen vision backbone -> AU-region pooling -> frozen text encoder -> Zarr.

    Under torchrun (one process per GPU, one node or several sharing the file system) the
    processes split the rows and write one store, the same as one process would."""
    import os

    from mf2.data.manifest import read_manifest
    from mf2.features.extract import AUGMENT_CHOICES, ExtractSettings, extract_features as run

    m = read_manifest(manifest, skip_bad=skip_bad)
    given = section(options, "extract")
    given.update(augment=AUGMENT_CHOICES[given["augment"]], workers="auto" if given["workers"] is None else given["workers"],
                 vision_weights=str(given["vision_weights"]) if given["vision_weights"] else None)
    settings = ExtractSettings(**given)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    with progress_bar(-(-len(m) // world), "extract") as bar:  # under torchrun: the first process's share
        summary = run(m, out, settings, overwrite=overwrite, progress=bar.update, log=click.echo)
    if not summary:  # not the first process of a torchrun: it reports for all
        return
    skipped = sum(summary["skipped"].values())
    speed = f"{summary['images_per_second']} images/s" if summary.get("images_per_second") else "nothing to do"
    click.echo(f"{summary['rows']} rows -> {out}: {summary['extracted_this_run']} extracted this run "
               f"({speed}), {summary['faces_not_found']} faces not found, "
               f"{skipped} images skipped" + (f" ({', '.join(f'{k}: {v}' for k, v in summary['skipped'].items())})"
                                              if skipped else ""))
    for what, count in summary.get("notes", {}).items():
        click.echo(f"note: {count} {what}", err=True)
    captions = summary.get("captions", {})
    if captions.get("rows"):
        click.echo("captions cached: " + ", ".join(f"{k} ({v} rows)" for k, v in captions["rows"].items()))
    else:
        click.echo("warning: no captions cached (the manifest has none): mf2 pretrain will need them; caption the "
                   "manifest first (mf2 caption) and extract from its .captioned.jsonl", err=True)
    for line in m.notes():
        click.echo(line, err=True)
    if "stage_shares" in summary:
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in summary["stage_shares"].items())
        click.echo(f"time: {shares} (writer thread busy {100 * summary['writer_busy']:.0f}%); bound by "
                   f"{summary['bound_by']}")
