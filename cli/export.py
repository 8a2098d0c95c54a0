"""``mf2 export``: a trained run as one self-contained model folder (safetensors, config, model card)."""

from pathlib import Path

import click

from ._common import one_line_errors
from .options import Number, PathType


@click.command()
@click.argument("run", type=PathType(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=PathType(path_type=Path, file_okay=False), required=True,
              help="The model folder to write (not inside RUN).")
@click.option("--cache", type=PathType(path_type=Path),
              help="Score the model on this feature cache for the model card, with 95% intervals over its videos.")
@click.option("--split", default="val", show_default=True, help="The split of --cache to score.")
@click.option("--bootstrap", type=Number(int, min=1), default=1000, show_default=True,
              help="Resamples of the split's videos for the intervals (with --cache).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier exported folder at --out.")
@one_line_errors
def export(run, out, cache, split, bootstrap, overwrite):
    """Write RUN (an MF² or DFN run) as one folder to hand over: model.safetensors (a DFN run with
    its frozen MF²), config.json (architecture, ITG vocabulary, feature signature, backbones by
    name and weight hash), tokenizer/, and README.md, a model card. mf2.Detector.from_pretrained(OUT)
    and mf2 predict --checkpoint OUT load it offline."""
    from mf2.export import export as run_export

    from mf2.io import exclusive_outputs

    with exclusive_outputs({"--out": out}):
        result = run_export(run, out, cache=cache, split=split, overwrite=overwrite, resamples=bootstrap,
                            log=lambda m: click.echo(m, err=True))
    click.echo(f"{result['model_kind']} model: {result['parameters']:,} parameters in {result['tensors']} tensors "
               f"({result['bytes'] / 2**20:.1f} MiB) -> {result['out']}"
               + ("; scored on " + str(cache) if result["scored"] else ""))
