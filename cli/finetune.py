"""``mf2 finetune``: DFN side adapters on a frozen MF² (--dfn), or all of MF² (--full)."""

from pathlib import Path

import click

from ._common import (checkpointing_option, compile_option, deterministic_option, given, lr_option, one_line_errors,
                      precision_option, warmup_option)


@click.command()
@click.option("--from", "from_run", type=click.Path(path_type=Path), required=True, help="Pretrained MF² run folder.")
@click.option("--cache", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--dfn/--full", "use_dfn", default=True, show_default=True,
              help="--dfn: freeze MF², train DFN side adapters; --full: fine-tune all of MF² (the 'w/o DFN' row).")
@click.option("--tasks", type=click.Choice(["both", "au", "emotion"]), default="both", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=56, show_default=True)
@lr_option
@warmup_option
@click.option("--adapter-blocks", default="all", show_default=True,
              help="MF² blocks the pathways read: 'all' (4N cells) or k evenly spaced (Table VI's 7).")
@click.option("--bottleneck", type=click.IntRange(min=0), default=0, show_default=True, help="Cell width r (0 = hidden).")
@click.option("--gate-scale", "lam", type=float, default=0.1, show_default=True, help="λ, the gate scaling factor.")
@click.option("--seed", type=int, default=0, show_default=True)
@deterministic_option
@precision_option
@checkpointing_option
@compile_option
@click.option("--device", default="cpu", show_default=True)
@click.option("--resume", is_flag=True)
@click.option("--overwrite", is_flag=True)
@one_line_errors
def finetune(from_run, cache, out, use_dfn, tasks, epochs, batch_size, lr, warmup_steps, adapter_blocks, bottleneck, lam,
             seed, deterministic, precision, activation_checkpointing, compile_blocks, device, resume, overwrite):
    """Fine-tune a pretrained MF²: DFN side adapters (MF² frozen) or the whole model."""
    from mf2.models.config import DFNConfig
    from mf2.runs import RunFolder
    from mf2.training.finetune import finetune_dfn, finetune_full
    from mf2.training.loop import TrainConfig

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed, tasks=tasks,
                      device=device, deterministic=deterministic, precision=precision,
                      activation_checkpointing=activation_checkpointing, compile=compile_blocks)
    if use_dfn:
        blocks = adapter_blocks if adapter_blocks == "all" else int(adapter_blocks)
        last = finetune_dfn(from_run, cache, out, DFNConfig(blocks=blocks, bottleneck=bottleneck, lam=lam), cfg,
                            resume=resume, overwrite=overwrite, log=click.echo, extend_to=given("epochs"))
        if last is None or last["rank"] != 0:  # other ranks: rank 0 reports
            return
        params = RunFolder(out).params()
        click.echo(f"trainable parameters: DFN {params['dfn'] / 1e6:.2f}M (paper 52.88M); MF² frozen "
                   f"({params['frozen_mf2'] / 1e6:.1f}M)")
    else:
        last = finetune_full(from_run, cache, out, cfg, resume=resume, overwrite=overwrite, log=click.echo,
                             extend_to=given("epochs"))
        if last is None or last["rank"] != 0:
            return
        params = RunFolder(out).params()["ours"]
        click.echo(f"trainable parameters: all of MF² {params['mf2'] / 1e6:.1f}M (paper w/o DFN: 373.4M)")
    if last:
        click.echo(f"epoch {last['epoch']}: {last['seconds']:.1f} s/epoch, val AU mean F1 {last['val_au_f1']:.4f}, "
                   f"val emotion mean accuracy {last['val_emotion_mean_acc']:.4f} -> {out}")
