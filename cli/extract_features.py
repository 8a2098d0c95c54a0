"""``mf2 extract-features``: frozen vision and text features of a manifest into a Zarr store."""

from pathlib import Path

import click

from ._common import one_line_errors, progress_bar
from .options import Number, PathType, device_option


@click.command("extract-features")
@click.option("--manifest", type=PathType(path_type=Path), required=True)
@click.option("--out", type=PathType(path_type=Path), required=True, help="Zarr store to write (resumed if present).")
@click.option("--vision", default="auto", show_default=True,
              help="timm model name; auto = vit_base_patch16_224 when its weights are on disk, else efficientnet_lite0.")
@click.option("--vision-weights", type=PathType(path_type=Path), help="Weights file for --vision (.safetensors/.pth).")
@click.option("--text", default="auto", show_default=True,
              help="transformers name or folder; auto = bert-base-uncased when cached, else the packaged MiniLM.")
@click.option("--face", type=click.Choice(["aligned", "detect"]), default="aligned", show_default=True,
              help="aligned: inputs are face crops; detect: dlib finds the largest face and aligns it.")
@click.option("--landmarks", type=click.Choice(["auto", "dlib", "manifest", "canonical"]), default="auto",
              show_default=True, help="auto: the manifest's when every row has them, else dlib.")
@click.option("--image-size", type=Number(int, min=32, max=4096), default=224, show_default=True)
@click.option("--batch-size", type=Number(int, min=1), default=32, show_default=True)
@device_option()
@click.option("--au-samples", type=Number(int, min=1, max=32), default=3, show_default=True, help="R: R x R samples per AU centre.")
@click.option("--au-window", type=Number(float, min=0, min_open=True, max=10), default=1.0, show_default=True,
              help="Sampling grid side, in rulers (inner-eye-corner distance).")
@click.option("--au-map", type=click.Choice(["auto", "last", "stride16", "stride8"]), default="auto", show_default=True,
              help="The feature map AU regions are pooled from: auto = the stride-16 stage of a CNN (finer than its last "
                   "map; 14 x 14 at 224 px), the patch grid of a ViT.")
@click.option("--augment", type=click.Choice(["none", "flip", "auto"]), default="none", show_default=True,
              help="flip: also store each face's mirrored view (landmarks mirrored, each AU's two centres swapped); "
                   "training samples from both, evaluation reads the originals (evaluate --tta flip averages them in). "
                   "auto: flip when the training split has at most 5,000 faces (not yet shown to win: see README).")
@click.option("--au-regions", type=click.Choice(["table", "small-face"]), default="table", show_default=True,
              help="Each AU's centres and window: table = DATA.md's centres, one window for all; small-face = per-AU "
                   "centres and sizes for the small muscles (README).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="bf16: autocast the frozen backbones (faster on GPUs and on CPUs with AVX512-BF16); auto = bf16 on "
                   "GPUs that support it, fp32 on CPUs.")
@click.option("--workers", default="auto", show_default=True,
              help="Processes that decode images and find faces ahead of the backbones; auto = none on a CPU, up to 8 "
                   "of this process's cores on a GPU.")
@click.option("--allow-download", is_flag=True, help="Let timm/transformers download weights that are not on disk.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store and start again.")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) bad manifest rows instead of stopping.")
@one_line_errors
def extract_features(manifest, out, vision, vision_weights, text, face, landmarks, image_size, batch_size, device,
                     au_samples, au_window, au_map, augment, au_regions, precision, workers, allow_download, overwrite,
                     skip_bad):
    """Faces -> landmarks -> frozen vision backbone -> AU-region pooling -> frozen text encoder -> Zarr.

    Under torchrun (one process per GPU, one node or several sharing the file system) the
    processes split the rows and write one store, the same as one process would."""
    import os

    from mf2.data.manifest import read_manifest
    from mf2.features.extract import ExtractSettings, extract_features as run

    if workers != "auto" and not (workers.isdigit()):
        raise click.BadParameter(f"expected 'auto' or a number >= 0, got {workers!r}", param_hint="--workers")
    m = read_manifest(manifest, skip_bad=skip_bad)
    settings = ExtractSettings(vision=vision, vision_weights=str(vision_weights) if vision_weights else None, text=text,
                               face=face, landmarks=landmarks, image_size=image_size, batch_size=batch_size,
                               device=device, au_samples=au_samples, au_window=au_window, precision=precision,
                               allow_download=allow_download, au_map=au_map,
                               augment={"auto": "auto", "none": (), "flip": ("flip",)}[augment], au_regions=au_regions,
                               workers=workers if workers == "auto" else int(workers))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    with progress_bar(-(-len(m) // world), "extract") as bar:  # under torchrun: the first process's share
        summary = run(m, out, settings, overwrite=overwrite, progress=bar.update, log=click.echo)
    if not summary:  # not the first process of a torchrun: it reports for all
        return
    skipped = sum(summary["skipped"].values())
    click.echo(f"{summary['rows']} rows -> {out}: {summary['extracted_this_run']} extracted this run "
               f"({summary['images_per_second']} images/s), {summary['faces_not_found']} faces not found, "
               f"{skipped} images skipped" + (f" ({', '.join(f'{k}: {v}' for k, v in summary['skipped'].items())})"
                                              if skipped else ""))
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
