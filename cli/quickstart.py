"""``mf2 quickstart``: the whole pipeline on built-in SynthFACS data, offline."""

from pathlib import Path

import click

from ._common import one_line_errors


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("mf2-quickstart"), show_default=True)
@click.option("--n", "n", type=click.IntRange(min=48), default=1600, show_default=True, help="SynthFACS images.")
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True, help="MF² pretraining epochs.")
@click.option("--dfn-epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@one_line_errors
def quickstart(out, n, epochs, dfn_epochs, seed):
    """synth -> caption -> extract-features -> pretrain -> finetune --dfn -> evaluate -> predict, with a report."""
    from mf2.quickstart import quickstart as run

    summary = run(out, n=n, epochs=epochs, dfn_epochs=dfn_epochs, seed=seed, log=click.echo)
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
