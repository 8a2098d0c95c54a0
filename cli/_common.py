"""What every command shares: one-line errors instead of tracebacks, progress bars."""

from __future__ import annotations

import functools

import click


def one_line_errors(fn):
    """Turn the library's input errors into a one-line message and exit status 1."""
    from mf2.captions.openai_backend import CaptionError
    from mf2.data.affwild2 import AffWild2Error
    from mf2.data.manifest import ManifestError
    from mf2.features.backbones import BackboneError
    from mf2.features.faces import ImageError
    from mf2.features.store import StoreError
    from mf2.runs import RunError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ManifestError, AffWild2Error, CaptionError, BackboneError, ImageError, StoreError, RunError, ValueError,
                FileNotFoundError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise click.ClickException(message) from None

    return wrapper


# Options several commands share, written once.
precision_option = click.option(
    "--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
    help="bf16: autocast (float32 master weights and optimizer state); auto = bf16 on GPUs that support it, "
         "fp32 on CPUs.")
deterministic_option = click.option(
    "--deterministic/--nondeterministic", default=None,
    help="Deterministic algorithms: the same seed on the same machine gives the same run, bit for bit. "
         "Default: on for CPUs (about 4% slower), off for GPUs (where it costs more; see README).")
checkpointing_option = click.option(
    "--activation-checkpointing", type=click.Choice(["auto", "none", "itm", "all"]), default="auto", show_default=True,
    help="Recompute Q-Former blocks in the backward to save memory: the ITM passes (most of it) or every "
         "pass. Same losses and gradients; more compute. auto = itm for the paper preset on a GPU, else none.")


compile_option = click.option(
    "--compile/--no-compile", "compile_blocks", default=False, show_default=True,
    help="torch.compile each Q-Former block: fused element-wise kernels (faster on GPUs; about a minute to "
         "compile at the start).")


def progress_bar(total: int, desc: str):
    """A tqdm bar (stderr), updated through the callback the library takes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False, disable=None)  # off when not a TTY
