"""``mf2 predict``: AU and emotion probabilities (and explanations) for every face of new images
and videos; a thin wrapper over ``mf2.Detector``."""

from pathlib import Path

import click

from ._common import one_line_errors, precision_option
from .options import Number, PathType, Text, device_option


# Detector's keywords -> this command's options (a ValueError from the library names the keyword)
_OPTION_OF = {"num_workers": "--workers", "min_face_score": "--min-face-score", "face_detector": "--face-detector",
              "threshold": "--threshold", "device": "--device", "precision": "--precision", "face": "--face",
              "vision_weights": "--vision-weights", "tta": "--tta"}


@click.command()
@click.option("--checkpoint", "run", type=PathType(path_type=Path), required=True,
              help="Run folder (mf2 pretrain or mf2 finetune) or exported model folder (mf2 export).")
@click.argument("inputs", nargs=-1, required=True, type=Text())
@click.option("--out", type=PathType(path_type=Path),
              help="results.csv or results.json (default: CSV on stdout); with --format openface, x.csv (one input) "
                   "or a folder (one CSV per source).")
@click.option("--annotate", type=PathType(file_okay=False, path_type=Path),
              help="Write annotated images into this folder.")
@click.option("--plots", type=PathType(file_okay=False, path_type=Path),
              help="Write plots per source into this folder: AU bars, and the detections (images) or the "
                   "timeline (videos).")
@click.option("--explain", is_flag=True, help="Generate a description per face (ITG decoding).")
@click.option("--decoding", type=click.Choice(["greedy", "beam"]), default="greedy", show_default=True,
              help="How --explain decodes.")
@click.option("--beams", type=Number(int, min=1), default=3, show_default=True, help="Beam width (--decoding beam).")
@click.option("--grounding", type=click.Choice(["heads", "none"]), default="heads", show_default=True,
              help="heads: --explain says what the AU and emotion heads decided, worded by the ITG decoder; none: the "
                   "ITG decoder alone (can contradict the heads).")
@click.option("--fps", type=Number(float, min=0), default=1.0, show_default=True,
              help="Video frames sampled per second (0 = every frame).")
@click.option("--face", type=click.Choice(["detect", "aligned"]), default="detect", show_default=True,
              help="detect: every face the face detector finds; aligned: each input is one aligned face crop.")
@click.option("--face-detector", type=click.Choice(["hog", "cnn", "mtcnn", "auto"]), default="auto",
              show_default=True, help="hog: dlib's frontal HOG; cnn: dlib's MMOD CNN (slow on a CPU); mtcnn: MTCNN "
                                      "(batched on a GPU); auto: the default, MTCNN.")
@click.option("--min-face-score", type=Number(float), default=None,
              help="Detection score a face needs [default: the detector's: hog 0.25 (clear faces score about 1 and "
                   "above), cnn 0.3, mtcnn 0.7 (a probability, as MTCNN publishes it)]. Faces just under it are counted "
                   "as near-misses.")
@click.option("--format", "out_format", type=click.Choice(["mf2", "openface"]), default="mf2", show_default=True,
              help="mf2: the results table (CSV or JSON by --out's name); openface: OpenFace 2.x's CSV columns "
                   "(--out x.csv for one input, else a folder with one CSV per source).")
@click.option("--tracking/--no-tracking", default=True, show_default=True,
              help="One track id per person across a video's frames (the 'track' column).")
@click.option("--smooth", type=Number(float, min=0, min_open=True), default=None,
              help="Seconds of per-track temporal smoothing of the probabilities (default: off).")
@click.option("--batch-size", type=Number(int, min=1), default=32, show_default=True, help="Faces per forward pass.")
@click.option("--workers", default="auto", show_default=True,
              help="Face-finding threads (dlib), or 0 to find faces in the main thread.")
@click.option("--threshold", type=Number(float, min=0, max=1), default=None,
              help="AU probability at which an AU counts as active (explained, drawn) [default: each AU's threshold "
                   "tuned on the run's validation split; 0.5 where the run has none].")
@device_option()
@precision_option
@click.option("--vision-weights", type=PathType(dir_okay=False), help="The vision weights file the run's cache used.")
@click.option("--allow-download", is_flag=True, help="Let missing backbone weights download (off by default).")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time views: flip averages each face's probabilities with its mirrored view's (one more backbone "
                   "pass per face).")
@one_line_errors
def predict(run, inputs, out, annotate, plots, explain, decoding, beams, grounding, fps, face, face_detector,
            min_face_score, out_format, tracking, smooth, batch_size, workers, threshold, device, precision,
            vision_weights, allow_download, tta):
    """Predict every face in INPUTS: images, folders, globs (quoted) or video files.

    One row per face (source, frame, time, face, track, status, score, box x/y/w/h, head pose, AU01 …
    AU26 probabilities, 8 emotion probabilities, top emotion, with --explain a generated
    description, and 68 landmarks x_0 … y_67); a frame with no face gets a row saying so; unreadable
    files are reported on stderr and skipped. The CSV is the table of mf2.Detector.detect
    (mf2.read_faces reads it back)."""
    import sys

    from mf2.detector import Detector
    from mf2.io import exclusive_outputs, refuse_overlap

    if workers != "auto":
        try:
            workers = int(workers)
        except ValueError:
            raise click.BadParameter(f"expected 'auto' or a number, got {workers!r}", param_hint="--workers") from None
    if smooth is not None and not tracking:  # smoothing averages each person's track: without tracks, nothing
        raise click.UsageError("--smooth averages each person's track over time, and --no-tracking makes no tracks: "
                               "drop one of them")
    if out_format == "openface" and out is None:
        raise click.UsageError("--format openface writes files: give --out x.csv (one input) or --out FOLDER")
    if out is not None and out.is_dir() and out_format != "openface":
        raise click.UsageError(f"--out {out} is a folder: give a file (results.csv or results.json)")
    outputs = {"--out": out, "--annotate": annotate, "--plots": plots}
    if out is not None and out_format == "mf2" and out.suffix.lower() != ".json":
        from mf2.faces import sidecar_path

        outputs["--out's record"] = sidecar_path(out)  # x.csv.json, written beside the table
    refuse_overlap({"--checkpoint": run, "input": list(inputs)}, outputs)
    try:
        detector = Detector.from_run(
            run, device, precision, face, face_detector=face_detector, min_face_score=min_face_score,
            threshold=threshold, tracking=tracking, num_workers=workers, vision_weights=vision_weights,
            allow_download=allow_download, tta=None if tta == "none" else tta)
    except ValueError as exc:  # the library names its keyword; say the option the user typed
        name, _, why = str(exc).partition(": ")
        if name in _OPTION_OF:
            raise click.BadParameter(why, param_hint=_OPTION_OF[name]) from None
        raise
    with exclusive_outputs(outputs), detector as det:
        try:
            faces = det.detect(list(inputs), batch_size=batch_size, fps=fps, explain=decoding if explain else False,
                               beams=beams, progress=None, annotate=annotate, log=lambda m: click.echo(m, err=True),
                               smooth=smooth, grounding=grounding)
        except BaseException as exc:  # stopped (Ctrl-C, SIGTERM, a failure): keep what was predicted
            partial = getattr(exc, "partial", None)
            if out is not None and partial is not None and len(partial) and out_format == "mf2":
                path = out.with_name(out.name + ".partial")
                partial.write_json(path) if out.suffix.lower() == ".json" else partial.to_csv(path)
                click.echo(f"stopped: the {len(partial)} rows predicted so far are in {path}"
                           + (f" ({out} is untouched)" if out.exists() else ""), err=True)
            raise
        if out_format == "openface":
            written_out = faces.to_openface(out)
            out = written_out[0] if len(written_out) == 1 else f"{len(written_out)} OpenFace CSVs in {written_out[0].parent}"
        elif out is not None and out.suffix.lower() == ".json":
            faces.write_json(out)
        else:
            faces.to_csv(out if out is not None else sys.stdout)
        written = faces.save_plots(plots) if plots else []
    c = faces.attrs["counts"]
    click.echo(f"{c['faces']} faces in {c['frames']} frames of {c['files']} files "
               f"({c['frames_without_face']} frames without a face, {len(faces.attrs['skipped'])} skipped"
               + (f", {c['near_misses']} near-misses under --min-face-score {faces.attrs['min_face_score']:g}"
                  if c.get("near_misses") else "")
               + (f", {c['kept_by_tracking'] + c['found_by_search']} kept by tracking (near-misses where a person was"
                  f" and faces found by looking there)" if c.get("kept_by_tracking") or c.get("found_by_search") else "")
               + "); "
               f"{len(faces)} rows -> {out or 'stdout'}"
               + (f"; {faces.attrs['annotated']} annotated images in {annotate}" if annotate else "")
               + (f"; {len(written)} plots in {plots}" if plots else ""), err=True)
