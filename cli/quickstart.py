"""``mf2 quickstart``: the whole pipeline on built-in SynthFACS data, offline, on a CPU.

synth -> caption (template) -> extract-features -> pretrain -> finetune --dfn -> evaluate ->
predict (a few SynthFACS val images, and ``skimage.data.astronaut()``), into one folder, with a
``report/`` folder: the Table II/III-style tables of the pretrained and the DFN model beside the
paper's rows, the plots, the predictions with their explanations, annotated images, and the
equivalent commands (``commands.sh``). Each step runs the ``mf2`` command a user would type.
"""

import json
import shlex
import shutil
import time
from pathlib import Path

import click
from click.testing import CliRunner

from ._common import one_line_errors
from .options import Number, PathType
from .caption import caption
from .evaluate import evaluate
from .extract_features import extract_features
from .finetune import finetune
from .predict import predict
from .pretrain import pretrain
from .synth import synth

COMMANDS = {c.name: c for c in (synth, caption, extract_features, pretrain, finetune, evaluate, predict)}


@click.command()
@click.option("--out", type=PathType(path_type=Path), default=Path("mf2-quickstart"), show_default=True)
@click.option("--n", "n", type=Number(int, min=48), default=1600, show_default=True, help="SynthFACS images.")
@click.option("--epochs", type=Number(int, min=1), default=6, show_default=True, help="MF² pretraining epochs.")
@click.option("--dfn-epochs", type=Number(int, min=1), default=4, show_default=True)
@click.option("--seed", type=Number(int), default=0, show_default=True)
@one_line_errors
def quickstart(out, n, epochs, dfn_epochs, seed):
    """synth -> caption -> extract-features -> pretrain -> finetune --dfn -> evaluate -> predict, with a report."""
    summary = run_quickstart(out, n=n, epochs=epochs, dfn_epochs=dfn_epochs, seed=seed, log=click.echo)
    p, d = summary["pretrained"], summary["dfn"]
    click.echo(f"quickstart done in {sum(summary['seconds'].values()):.0f} s: MF² AU mean F1 {p['au_mean_f1']:.3f}, "
               f"emotion mean accuracy {p['emotion_mean_accuracy']:.3f}; with DFN {d['au_mean_f1']:.3f} / "
               f"{d['emotion_mean_accuracy']:.3f}. Report: {summary['report']} (commands: {out / 'commands.sh'})")
    diff = summary["dfn_minus_pretrained"]
    click.echo("DFN − MF² on the same val images (95% interval over {} videos): AU mean F1 {}, emotion mean accuracy {}".format(
        diff["groups"], *(f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                          for d in (diff["au_mean_f1"], diff["emotion_mean_accuracy"]))))
    for face in summary["astronaut"]:
        if face["status"] == "ok":
            click.echo(f"astronaut.png: a face at {face['box']}, {face['emotion']}: {face['explanation']}")


def run_quickstart(out, n: int = 1600, epochs: int = 6, dfn_epochs: int = 4, batch_size: int = 32, seed: int = 0,
                   log=print) -> dict:
    """Every step as the command a user would type (each echoed, with its output), then the report."""
    from mf2.data.synthfacs import sample_specs
    from mf2.io import atomic_write_text
    from mf2.runs import RunFolder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, cache, run, dfn = out / "synthfacs", out / "synthfacs/features.zarr", out / "mf2", out / "mf2-dfn"
    report = out / "report"
    photo = out / "astronaut.png"
    _write_astronaut(photo)
    # the first val images of the data set the synth step is about to write (its defaults, this seed)
    val_images = [str(data / f"images/{spec.id}.png") for spec in sample_specs(n, seed) if spec.split == "val"][:4]
    steps = [
        ["synth", "--n", str(n), "--size", "112", "--seed", str(seed), "--out", str(data)],
        ["caption", "--manifest", str(data / "manifest.jsonl")],
        ["extract-features", "--manifest", str(data / "manifest.captioned.jsonl"), "--out", str(cache)],
        ["pretrain", "--cache", str(cache), "--out", str(run), "--preset", "small", "--epochs", str(epochs),
         "--batch-size", str(batch_size), "--seed", str(seed), "--overwrite"],
        ["finetune", "--dfn", "--from", str(run), "--cache", str(cache), "--out", str(dfn), "--epochs", str(dfn_epochs),
         "--batch-size", str(batch_size), "--overwrite"],
        ["evaluate", "--checkpoint", str(dfn), "--cache", str(cache), "--beside", str(run), "--probe"],
        ["predict", "--checkpoint", str(dfn), *val_images, "--face", "aligned", "--explain", "--annotate",
         str(report / "annotated"), "--out", str(report / "predictions-synthfacs.csv")],
        ["predict", "--checkpoint", str(dfn), str(photo), "--explain", "--annotate", str(report / "annotated"),
         "--out", str(report / "predictions-astronaut.json")],
    ]
    make_photo = ("python -c " + shlex.quote("from PIL import Image; from skimage.data import astronaut; "
                                             f"Image.fromarray(astronaut()).save({str(photo)!r})"))
    atomic_write_text(out / "commands.sh", make_photo + "\n" + "".join("mf2 " + shlex.join(s) + "\n" for s in steps))
    timings = {}
    runner = CliRunner()
    for step in steps:
        t0 = time.perf_counter()
        log(f"$ mf2 {shlex.join(step)}")
        result = runner.invoke(COMMANDS[step[0]], step[1:], catch_exceptions=False)
        log(result.output.rstrip())
        if result.exit_code != 0:
            raise RuntimeError(f"quickstart: 'mf2 {step[0]}' failed: {result.output.strip().splitlines()[-1]}")
        timings[step[0]] = timings.get(step[0], 0) + round(time.perf_counter() - t0, 1)
    evaluated = RunFolder(dfn)
    for name in ("tables.md", "metrics.json", "au_f1.png", "confusion.png", "curves.png"):
        if (evaluated.eval_folder("val") / name).is_file():
            shutil.copy(evaluated.eval_folder("val") / name, report / name)
    shutil.copy(out / "commands.sh", report / "commands.sh")
    metrics = evaluated.eval_metrics("val")
    astronaut = json.loads((report / "predictions-astronaut.json").read_text())["rows"]
    summary = {"folder": str(out), "seconds": timings, "dfn": {"au_mean_f1": metrics["au"]["mean"],
               "emotion_mean_accuracy": metrics["emotion"]["mean_accuracy"]},
               "pretrained": {"au_mean_f1": metrics["beside"][run.name]["au"]["mean"],
                              "emotion_mean_accuracy": metrics["beside"][run.name]["emotion"]["mean_accuracy"]},
               "dfn_minus_pretrained": metrics["beside"][run.name]["paired"],
               "astronaut": [{k: r.get(k) for k in ("status", "box", "emotion", "explanation")} for r in astronaut],
               "report": str(report)}
    atomic_write_text(report / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _write_astronaut(path: Path) -> None:
    """The test photo every mf2 install has (scikit-image's ``data.astronaut()``, public domain, NASA)."""
    from PIL import Image
    from skimage.data import astronaut

    Image.fromarray(astronaut()).save(path)
