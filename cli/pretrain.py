"""``mf2 pretrain``: train MF² (Emo-VL + AU-VL) on a feature cache."""

import click

from ._common import one_line_errors, progress_bar
from .options import PathType, config_options, explicit, section, typed_value


def report_parameters(params: dict) -> str:
    from mf2.models.config import PAPER_PARAMS

    return "trainable parameters: " + ", ".join(
        f"{label} {params[key] / 1e6:.1f}M (paper {PAPER_PARAMS[key] / 1e6:.1f}M)"
        for key, label in (("emo_vl", "Emo-VL"), ("au_vl", "AU-VL"), ("mf2", "MF²")))


@click.command()
@click.option("--cache", type=PathType(), help="Feature store from mf2 extract-features.")
@click.option("--out", type=PathType(), help="Run folder.")
@config_options("model")
@config_options("train")
@click.option("--align/--no-align", default=True, show_default=True,
              help="--no-align: train the task classifiers only, without ITC/ITM/ITG (for a cache without captions, "
                   "if that is what you mean; MF² pretraining aligns images with their captions).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in --out.")
@click.option("--params-only", is_flag=True, help="Build the model, report trainable parameters, do not train.")
@one_line_errors
def pretrain(cache, out, align, resume, overwrite, params_only, **options):
    """Train MF² on a feature cache (Table VI: AdamW, weight decay 0.05, batch 56, 30 epochs; lr and warm-up
    resolved for the preset and the run's length, printed and stored in the run)."""
    from mf2.models.config import MF2Config
    from mf2.models.mf2 import MF2, count_parameters
    from mf2.runs import RunFolder
    from mf2.training.loop import TrainConfig
    from mf2.training.pretrain import pretrain as run

    model = section(options, "model")
    model_cfg = MF2Config.from_preset(model.pop("preset"), **model)
    if params_only:
        if cache:
            from mf2.features.reader import CacheReader

            reader = CacheReader(cache, None, model_cfg.emo_text)
            model_cfg.vision_dim, model_cfg.text_dim, model_cfg.vocab = reader.vision_dim, reader.text_dim, reader.vocabulary()
        else:  # the paper's encoders: ViT-B/16 (768) and BERT-base (768, 30,522 tokens)
            model_cfg.vision_dim, model_cfg.text_dim, model_cfg.vocab = 768, 768, [0, -1, -2] + list(range(1, 30522))
        click.echo(f"preset {model_cfg.preset}: " + report_parameters(count_parameters(MF2(model_cfg))))
        return
    if not cache or not out:
        raise click.UsageError("--cache and --out are required to train")
    cfg = TrainConfig(**section(options, "train"))
    with progress_bar(None, "pretrain") as bar:
        last = run(cache, out, model_cfg, cfg, resume=resume, overwrite=overwrite, progress=bar.update, log=click.echo,
                   extend_to=typed_value("epochs"), align=align, given=explicit("train", "model", align="run"))
    if last is None or last["rank"] != 0:  # other ranks: rank 0 reports
        return
    params = RunFolder(out).params()["ours"]
    click.echo(report_parameters(params))
    if last:
        click.echo(f"epoch {last['epoch']}: val AU mean F1 {last['val_au_f1']:.4f}, "
                   f"val emotion mean accuracy {last['val_emotion_mean_acc']:.4f} -> {out}")
