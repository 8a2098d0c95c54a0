"""``mf2 synth``: write the built-in SynthFACS dataset."""

import time
from pathlib import Path

import click

from ._common import one_line_errors, progress_bar
from .options import Number, PathType


@click.command()
@click.option("--n", "n", type=Number(int, min=1, max=10_000_000), default=2000, show_default=True, help="Number of images.")
@click.option("--preset", type=click.Choice(["default", "hard"]), default="default", show_default=True,
              help="hard: wider identities, subtle AUs, pose, harsh light, 48-112 px grey or colour JPEG faces, "
                   "landmark error, 3% label noise, and a test split (README: SynthFACS-hard).")
@click.option("--size", type=click.Choice(["112", "224"]), default="112", show_default=True,
              help="Image side in pixels (the hard preset draws at 112 and stores each face at its own side).")
@click.option("--seed", type=Number(int), default=0, show_default=True)
@click.option("--out", type=PathType(path_type=Path), required=True, help="Output folder.")
@click.option("--images-per-video", type=Number(int, min=1), default=None,
              help="Images per synthetic identity (the 'video' used for splitting) [default: 10; hard: 8].")
@click.option("--val-fraction", type=Number(float, min=0, max=1, max_open=True), default=None,
              help="Share of the videos in the val split [default: 0.2].")
@click.option("--test-fraction", type=Number(float, min=0, max=1, max_open=True), default=None,
              help="Share of the videos held out as the test split [default: 0; hard: 0.2].")
@click.option("--label-noise", type=Number(float, min=0, max=0.5), default=None,
              help="Probability of flipping each AU label [default: 0.02; hard: 0.03].")
@click.option("--workers", type=Number(int, min=1, max=256), default=None, help="Render processes (default: all cores).")
@click.option("--no-baseline", is_flag=True, help="Skip the pixel logistic-regression baseline in stats.json.")
@one_line_errors
def synth(n, preset, size, seed, out, images_per_video, val_fraction, test_fraction, label_noise, workers, no_baseline):
    """Write SynthFACS: images, 68-point landmarks, AU + emotion labels, manifest.jsonl, stats.json."""
    from mf2.data.mfa import summary_line
    from mf2.data.synthfacs import write_synthfacs
    from mf2.evaluation.baselines import add_pixel_baseline

    from mf2.io import exclusive_outputs

    start = time.perf_counter()
    with exclusive_outputs({"--out": out}), progress_bar(n, "synth") as bar:
        stats = write_synthfacs(out, n, int(size), seed, images_per_video, val_fraction, label_noise, workers,
                                progress=bar.update, test_fraction=test_fraction, preset_name=preset)
    if not no_baseline:
        stats = add_pixel_baseline(out)
    what = f"{size} px" if preset == "default" else f"{preset}, 48-112 px"
    click.echo(f"SynthFACS ({what}, seed {seed}): {summary_line(stats)} -> {out}")
    base = stats.get("pixel_logistic_baseline")
    if base:
        click.echo(f"pixel logistic-regression baseline on val: emotion mean accuracy {base['emotion']['mean_accuracy']:.3f}, "
                   f"AU mean F1 {base['au']['mean']:.3f}")
    click.echo(f"{stats['synthfacs']['rendered']} rendered, {stats['synthfacs']['reused']} already on disk, "
               f"{time.perf_counter() - start:.1f} s")
