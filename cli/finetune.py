"""``mf2 finetune``: DFN side adapters on a frozen MF² (--dfn), or all of MF² (--full)."""

import click

from ._common import one_line_errors, progress_bar
from .options import PathType, config_options, explicit, section, typed_value


# training options that only the MF² trainer reads (its heads' regularisers, mirrored views)
MF2_ONLY = ("flip", "emotion_smoothing", "head_dropout", "head_mixup")


@click.command()
@click.option("--from", "from_run", type=PathType(), required=True, help="Pretrained MF² run folder.")
@click.option("--cache", type=PathType(), required=True)
@click.option("--out", type=PathType(), required=True)
@click.option("--dfn/--full", "use_dfn", default=True, show_default=True,
              help="--dfn: freeze MF², train DFN side adapters; --full: fine-tune all of MF² (the 'w/o DFN' row).")
@config_options("train")
@config_options("dfn")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in --out.")
@one_line_errors
def finetune(from_run, cache, out, use_dfn, resume, overwrite, **options):
    """Fine-tune a pretrained MF²: DFN side adapters (MF² frozen) or the whole model."""
    from mf2.models.config import DFNConfig
    from mf2.runs import RunFolder
    from mf2.training.finetune import finetune_dfn, finetune_full
    from mf2.training.loop import TrainConfig

    cfg = TrainConfig(**section(options, "train"))
    dfn = section(options, "dfn")
    typed = explicit("train", "dfn")
    with progress_bar(None, "finetune") as bar:
        if use_dfn:
            mf2_only = sorted(k for k in typed["train"] if k in MF2_ONLY)
            if mf2_only:
                from mf2.training.session import flag

                raise click.UsageError(f"{', '.join(flag(k) for k in mf2_only)}: trains MF²'s own heads and views "
                                       "(pretrain, finetune --full); DFN trains its adapters on the frozen MF²'s "
                                       "block outputs of the original faces")
            last = finetune_dfn(from_run, cache, out, DFNConfig(**dfn), cfg, resume=resume, overwrite=overwrite,
                                log=click.echo, extend_to=typed_value("epochs"), given=typed, progress=bar.update)
        else:
            if typed["dfn"]:
                from mf2.training.session import flag

                names = ", ".join(sorted(flag(k) for k in typed["dfn"]))
                raise click.UsageError(f"{names}: a DFN option, but --full fine-tunes all of MF² without DFN")
            last = finetune_full(from_run, cache, out, cfg, resume=resume, overwrite=overwrite, log=click.echo,
                                 extend_to=typed_value("epochs"), given=typed, progress=bar.update)
    if last is None or last["rank"] != 0:  # other ranks: rank 0 reports
        return
    if use_dfn:
        params = RunFolder(out).params()
        click.echo(f"trainable parameters: DFN {params['dfn'] / 1e6:.2f}M (paper 52.88M); MF² frozen "
                   f"({params['frozen_mf2'] / 1e6:.1f}M)")
    else:
        params = RunFolder(out).params()["ours"]
        click.echo(f"trainable parameters: all of MF² {params['mf2'] / 1e6:.1f}M (paper w/o DFN: 373.4M)")
    if last:
        click.echo(f"epoch {last['epoch']}: {last['seconds']:.1f} s/epoch, val AU mean F1 {last['val_au_f1']:.4f}, "
                   f"val emotion mean accuracy {last['val_emotion_mean_acc']:.4f} -> {out}")
