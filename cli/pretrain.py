"""``mf2 pretrain``: train MF² (Emo-VL + AU-VL) on a feature cache."""

from pathlib import Path

import click

from ._common import (checkpointing_option, compile_option, deterministic_option, given, lr_option, one_line_errors,
                      precision_option, progress_bar, warmup_option)


def report_parameters(params: dict) -> str:
    from mf2.models.config import PAPER_PARAMS

    return "trainable parameters: " + ", ".join(
        f"{label} {params[key] / 1e6:.1f}M (paper {PAPER_PARAMS[key] / 1e6:.1f}M)"
        for key, label in (("emo_vl", "Emo-VL"), ("au_vl", "AU-VL"), ("mf2", "MF²")))


@click.command()
@click.option("--cache", type=click.Path(path_type=Path), help="Feature store from mf2 extract-features.")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder.")
@click.option("--preset", type=click.Choice(["small", "paper"]), default="small", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=56, show_default=True)
@lr_option
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@warmup_option
@click.option("--tasks", type=click.Choice(["both", "au", "emotion"]), default="both", show_default=True)
@click.option("--no-emo-vl", is_flag=True, help="Ablation: without the Emo-VL branch.")
@click.option("--no-au-vl", is_flag=True, help="Ablation: without the AU-VL branch.")
@click.option("--emotion-reads", type=click.Choice(["global", "global+au"]), default="global+au", show_default=True,
              help="The emotion head's input: Emo-VL's pooled queries, or those beside each AU sequence's.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--au-weighting", type=click.Choice(["frequency", "none"]), default="frequency", show_default=True,
              help="Weigh each AU's positives by its training negatives/positives ratio (1 to 20), or plain BCE.")
@click.option("--train-rows", type=click.IntRange(min=1), default=None,
              help="Train on this many training rows, drawn with --seed (learning curves) [default: all].")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Draw each face's mirrored view half the time when the cache holds them (extract-features --augment).")
@click.option("--emotion-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Label smoothing of the emotion cross-entropy.")
@click.option("--head-dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Dropout of the task heads' inputs (the pooled query outputs) in training.")
@click.option("--head-mixup", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Feature mixup: each face's head inputs and labels mixed with another face's of the batch, its share "
                   "drawn in [0, this].")
@deterministic_option
@precision_option
@checkpointing_option
@compile_option
@click.option("--device", default="cpu", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in --out.")
@click.option("--params-only", is_flag=True, help="Build the model, report trainable parameters, do not train.")
@one_line_errors
def pretrain(cache, out, preset, epochs, batch_size, lr, weight_decay, warmup_steps, tasks, no_emo_vl, no_au_vl, emotion_reads, seed,
             au_weighting, train_rows, flip, emotion_smoothing, head_dropout, head_mixup, deterministic, precision, activation_checkpointing, compile_blocks, device, resume, overwrite, params_only):
    """Train MF² on a feature cache (Table VI: AdamW, weight decay 0.05, batch 56, 30 epochs; lr and warm-up
    resolved for the preset and the run's length, printed and stored in the run)."""
    from mf2.models.config import MF2Config
    from mf2.models.mf2 import MF2, count_parameters
    from mf2.runs import RunFolder
    from mf2.training.loop import TrainConfig
    from mf2.training.pretrain import pretrain as run

    model_cfg = MF2Config.from_preset(preset, emo_vl=not no_emo_vl, au_vl=not no_au_vl, emotion_reads=emotion_reads)
    if params_only:
        if cache:
            from mf2.features.reader import CacheReader

            reader = CacheReader(cache, None, model_cfg.emo_text)
            model_cfg.vision_dim, model_cfg.text_dim, model_cfg.vocab = reader.vision_dim, reader.text_dim, reader.vocabulary()
        else:  # the paper's encoders: ViT-B/16 (768) and BERT-base (768, 30,522 tokens)
            model_cfg.vision_dim, model_cfg.text_dim, model_cfg.vocab = 768, 768, [0, -1, -2] + list(range(1, 30522))
        click.echo(f"preset {preset}: " + report_parameters(count_parameters(MF2(model_cfg))))
        return
    if not cache or not out:
        raise click.UsageError("--cache and --out are required to train")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                      seed=seed, deterministic=deterministic, tasks=tasks, device=device, precision=precision,
                      activation_checkpointing=activation_checkpointing, compile=compile_blocks,
                      au_weighting=au_weighting, train_rows=train_rows, flip=flip, emotion_smoothing=emotion_smoothing,
                      head_dropout=head_dropout, head_mixup=head_mixup)
    with progress_bar(None, "pretrain") as bar:
        last = run(cache, out, model_cfg, cfg, resume=resume, overwrite=overwrite, progress=bar.update, log=click.echo,
                   extend_to=given("epochs"))
    if last is None or last["rank"] != 0:  # other ranks: rank 0 reports
        return
    params = RunFolder(out).params()["ours"]
    click.echo(report_parameters(params))
    if last:
        click.echo(f"epoch {last['epoch']}: val AU mean F1 {last['val_au_f1']:.4f}, "
                   f"val emotion mean accuracy {last['val_emotion_mean_acc']:.4f} -> {out}")
