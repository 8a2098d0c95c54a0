"""``mf2 predict``: AU and emotion probabilities (and explanations) for every face of new images
and videos; a thin wrapper over ``mf2.Detector``."""

from pathlib import Path

import click

from ._common import one_line_errors, precision_option


@click.command()
@click.option("--checkpoint", "run", type=click.Path(path_type=Path), required=True,
              help="Run folder (mf2 pretrain or mf2 finetune) or exported model folder (mf2 export).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="results.csv or results.json (default: CSV on stdout).")
@click.option("--annotate", type=click.Path(file_okay=False, path_type=Path),
              help="Write annotated images into this folder.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path),
              help="Write plots per source into this folder: AU bars, and the detections (images) or the "
                   "timeline (videos).")
@click.option("--explain", is_flag=True, help="Generate a description per face (ITG decoding).")
@click.option("--decoding", type=click.Choice(["greedy", "beam"]), default="greedy", show_default=True,
              help="How --explain decodes.")
@click.option("--beams", type=click.IntRange(min=1), default=3, show_default=True, help="Beam width (--decoding beam).")
@click.option("--fps", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Video frames sampled per second (0 = every frame).")
@click.option("--face", type=click.Choice(["detect", "aligned"]), default="detect", show_default=True,
              help="detect: every face dlib finds; aligned: each input is one aligned face crop.")
@click.option("--min-face-score", type=float, default=0.25, show_default=True,
              help="dlib detection score a face needs (clear faces score about 1 and above).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Faces per forward pass.")
@click.option("--workers", default="auto", show_default=True,
              help="Face-finding threads (dlib), or 0 to find faces in the main thread.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="AU probability at which an AU counts as active (explained, drawn) [default: each AU's threshold "
                   "tuned on the run's validation split; 0.5 where the run has none].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, … or auto.")
@precision_option
@click.option("--vision-weights", type=click.Path(dir_okay=False), help="The vision weights file the run's cache used.")
@click.option("--allow-download", is_flag=True, help="Let missing backbone weights download (off by default).")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time views: flip averages each face's probabilities with its mirrored view's (one more backbone "
                   "pass per face).")
@one_line_errors
def predict(run, inputs, out, annotate, plots, explain, decoding, beams, fps, face, min_face_score, batch_size, workers,
            threshold, device, precision, vision_weights, allow_download, tta):
    """Predict every face in INPUTS: images, folders, globs (quoted) or video files.

    One row per face (source, frame, time, face, status, score, box x/y/w/h, AU01 … AU26
    probabilities, 8 emotion probabilities, top emotion, with --explain a generated description,
    and 68 landmarks x_0 … y_67); a frame with no face gets a row saying so; unreadable files are
    reported on stderr and skipped. The CSV is the table of mf2.Detector.detect (mf2.read_faces
    reads it back)."""
    import sys

    from mf2.detector import Detector
    from mf2.io import refuse_overlap

    if workers != "auto":
        try:
            workers = int(workers)
        except ValueError:
            raise click.BadParameter(f"expected 'auto' or a number, got {workers!r}", param_hint="--workers") from None
    refuse_overlap({"--checkpoint": run, "input": [_searched(i) for i in inputs]},
                   {"--out": out, "--annotate": annotate, "--plots": plots})
    with Detector.from_run(run, device, precision, face, min_face_score=min_face_score, threshold=threshold,
                           num_workers=workers, vision_weights=vision_weights, allow_download=allow_download,
                           tta=None if tta == "none" else tta) as det:
        try:
            faces = det.detect(list(inputs), batch_size=batch_size, fps=fps, explain=decoding if explain else False,
                               beams=beams, progress=None, annotate=annotate, log=lambda m: click.echo(m, err=True))
        except BaseException as exc:  # stopped (Ctrl-C, SIGTERM, a failure): keep what was predicted
            partial = getattr(exc, "partial", None)
            if out is not None and partial is not None and len(partial):
                path = out.with_name(out.name + ".partial")
                partial.write_json(path) if out.suffix.lower() == ".json" else partial.to_csv(path)
                click.echo(f"stopped: the {len(partial)} rows predicted so far are in {path}"
                           + (f" ({out} is untouched)" if out.exists() else ""), err=True)
            raise
    if out is not None and out.suffix.lower() == ".json":
        faces.write_json(out)
    else:
        faces.to_csv(out if out is not None else sys.stdout)
    written = faces.save_plots(plots) if plots else []
    c = faces.attrs["counts"]
    click.echo(f"{c['faces']} faces in {c['frames']} frames of {c['files']} files "
               f"({c['frames_without_face']} frames without a face, {len(faces.attrs['skipped'])} skipped); "
               f"{len(faces)} rows -> {out or 'stdout'}"
               + (f"; {faces.attrs['annotated']} annotated images in {annotate}" if annotate else "")
               + (f"; {len(written)} plots in {plots}" if plots else ""), err=True)


def _searched(item: str) -> Path:
    """What an input reads: the file or folder, or for a glob the folder its pattern starts in."""
    if not any(c in item for c in "*?["):
        return Path(item)
    parts = Path(item).parts
    fixed = next(k for k, part in enumerate(parts) if any(c in part for c in "*?["))
    return Path(*parts[:fixed]) if fixed else Path(".")
