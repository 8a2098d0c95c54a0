"""``mf2 evaluate``: per-AU F1 and per-class emotion accuracy of a run, like the paper's tables."""

from pathlib import Path

import click

from ._common import one_line_errors, precision_option
from .options import Number, PathType, Text, device_option


@click.command()
@click.option("--checkpoint", "run", type=PathType(path_type=Path), required=True, help="Run folder.")
@click.option("--cache", type=PathType(path_type=Path), required=True)
@click.option("--split", type=Text(), default="auto", show_default=True,
              help="The split to score: auto = test when the cache holds one (training never read it), else val.")
@device_option()
@precision_option
@click.option("--probe", is_flag=True, help="Also fit linear probes on the cache's pooled features (a floor to beat).")
@click.option("--beside", "beside", multiple=True, type=PathType(path_type=Path),
              help="Other run folders to report in the same tables (e.g. the direct emotion model beside an "
                   "AU-pretrained, emotion-fine-tuned one: Table V).")
@click.option("--beside-own-cache", is_flag=True,
              help="Score each --beside run on the cache it was trained on (same images, other features: another "
                   "AU map, backbone or augmentation), still paired image by image.")
@click.option("--transition", is_flag=True,
              help="RUN is AU-pretrained then emotion-fine-tuned: add the Table V section (with --beside the direct model).")
@click.option("--bootstrap", type=Number(int, min=0), default=1000, show_default=True,
              help="Resamples (of the split's videos) for the 95% interval of RUN minus each --beside run; 0 = none.")
@click.option("--out", type=PathType(file_okay=False, path_type=Path), default=None,
              help="Results folder (default: RUN/eval_<split>; name another for another cache).")
@click.option("--explain", type=Number(int, min=0), default=0, show_default=True, metavar="N",
              help="Also explain the split's first N faces with each decoder (grounded in the heads, and the ITG "
                   "decoder alone) and report consistency with the heads, per-AU sentence correctness, repeated "
                   "n-grams, BLEU-4 / ROUGE-L / CIDEr against the split's captions and explanations/s; 0 = off.")
@click.option("--decoding", type=click.Choice(["greedy", "beam"]), default="greedy", show_default=True,
              help="How --explain decodes.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time views: flip averages each face's probabilities with its mirrored view's (a cache extracted "
                   "with --augment flip), for RUN and every --beside run, and reports the gain over RUN without it.")
@one_line_errors
def evaluate(run, cache, split, device, precision, probe, beside, beside_own_cache, transition, bootstrap, out, explain,
             decoding, tta):
    """Table II/III-style results (JSON, Markdown, PNG plots) in RUN/eval_<split>/ (or --out)."""
    from mf2.evaluation.evaluate import evaluate as run_eval, resolve_split
    from mf2.io import exclusive_outputs
    from mf2.runs import RunFolder

    tta = None if tta == "none" else tta
    split = resolve_split(cache, split)
    with exclusive_outputs({"--out": out or RunFolder(run).eval_folder(split + (f"_tta_{tta}" if tta else ""))}):
        result = run_eval(run, cache, split, device, probe=probe, beside=beside, transition=transition,
                          bootstrap=bootstrap, folder=out, precision=precision, beside_own_cache=beside_own_cache,
                          explain=explain, decoding=decoding, tta=tta)
    click.echo((Path(result["folder"]) / "tables.md").read_text())
    click.echo(result["split_note"])
    click.echo(f"AU mean F1 {result['au']['mean']:.4f}; emotion mean accuracy {result['emotion']['mean_accuracy']:.4f}, "
               f"overall {result['emotion']['overall_accuracy']:.4f}; {result['images']} images -> {result['folder']}")
    if probe:
        p = result["probe"]
        click.echo(f"linear probe on pooled features: AU mean F1 {p['au']['mean']:.4f}; "
                   f"emotion mean accuracy {p['emotion']['mean_accuracy']:.4f}")
    if explain:
        x = result["explanations"]
        for g, d in x["decoders"].items():
            click.echo(f"explanations consistent with the heads ({g}): {d['consistent']:.1%} of {x['faces']} faces; "
                       f"AU sentences correct {d['au_sentences_correct'] or 0:.1%}, repeated 3-grams "
                       f"{d['repeated_ngrams']:.1%} of sentences, CIDEr {d['cider']:.3f}")
