"""``mf2 predict``: AU and emotion probabilities (and explanations) for every face of new images and videos."""

from pathlib import Path

import click

from ._common import one_line_errors, precision_option, progress_bar


@click.command()
@click.option("--checkpoint", "run", type=click.Path(path_type=Path), required=True,
              help="Run folder (mf2 pretrain or mf2 finetune).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="results.csv or results.json (default: CSV on stdout).")
@click.option("--annotate", type=click.Path(file_okay=False, path_type=Path),
              help="Write annotated images into this folder.")
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
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="AU probability at which an AU counts as active (explained and drawn).")
@click.option("--device", default="cpu", show_default=True)
@precision_option
@click.option("--vision-weights", type=click.Path(dir_okay=False), help="The vision weights file the run's cache used.")
@click.option("--allow-download", is_flag=True, help="Let missing backbone weights download (off by default).")
@one_line_errors
def predict(run, inputs, out, annotate, explain, decoding, beams, fps, face, min_face_score, batch_size, threshold, device,
            precision, vision_weights, allow_download):
    """Predict every face in INPUTS: images, folders, globs (quoted) or video files.

    One row per face (source, frame, time, box, 68 landmarks, 12 AU probabilities, 8 emotion
    probabilities, top emotion, and with --explain a generated description); a frame with no
    face gets a row saying so; unreadable files are reported on stderr and skipped."""
    from mf2.prediction.predict import PredictSettings
    from mf2.prediction.predict import predict as run_predict

    settings = PredictSettings(face=face, explain=decoding if explain else None, beams=beams, batch_size=batch_size,
                               min_face_score=min_face_score, threshold=threshold, device=device, precision=precision, vision_weights=vision_weights,
                               allow_download=allow_download)
    bar = progress_bar(None, "predict")
    try:
        summary = run_predict(run, inputs, out, annotate, fps or None, settings, progress=bar.update,
                              log=lambda m: click.echo(m, err=True))
    finally:
        bar.close()
    if not summary["frames"]:
        raise click.ClickException(f"nothing could be read ({summary['skipped']} inputs skipped)")
    click.echo(f"{summary['faces']} faces in {summary['frames']} frames of {summary['files']} files "
               f"({summary['frames_without_face']} frames without a face, {summary['skipped']} skipped); "
               f"{summary['rows']} rows -> {summary['out'] or 'stdout'}"
               + (f"; {summary['annotated']} annotated images in {annotate}" if annotate else ""), err=True)
