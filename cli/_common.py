"""What every command shares: one-line errors instead of tracebacks, progress bars."""

from __future__ import annotations

import functools

import click


def one_line_errors(fn):
    """Turn what goes wrong for a user into a one-line message and exit status 1: the library's
    input errors (every one is a ValueError: manifests, images, stores, runs, backbones, paths,
    locks) and the operating system's (a missing or read-only path, a full disk), with the path."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except OSError as exc:
            raise click.ClickException(os_error_line(exc)) from None

    return wrapper


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's time limit, ``kill``) ends a command like Ctrl-C does: Python unwinds,
    so temporary files are removed and partial outputs are set aside, never left looking complete;
    the exit status is 143 and one line says how to continue."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        click.echo(f"mf2: stopped by {signal.Signals(signum).name}; what was saved is kept: run the same command "
                   "again to continue (pretrain and finetune: with --resume)", err=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def os_error_line(exc: OSError) -> str:
    """'permission denied: runs/mf2/log.jsonl' -- the reason and the path, in one line."""
    reason = (exc.strerror or str(exc).splitlines()[0] or type(exc).__name__).lower()
    where = exc.filename if exc.filename is not None else ""
    other = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
    return f"{reason}: {where}{other}" if where else reason


class AutoOr(click.ParamType):
    """'auto' (-> None: the library decides, and the run records what it chose) or a positive number."""

    def __init__(self, kind):
        self.kind, self.name = kind, f"auto|{kind.__name__}"

    def convert(self, value, param, ctx):
        if value is None or value == "auto":
            return None
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"expected 'auto' or a {self.kind.__name__}, got {value!r}", param, ctx)
        if number <= 0:
            self.fail(f"expected a positive number, got {value!r}", param, ctx)
        return number


lr_option = click.option(
    "--lr", type=AutoOr(float), default="auto", show_default=True,
    help="Peak learning rate; auto = the preset's: Table VI's 1e-4 for 'paper', 5e-4 (pretraining) and 1e-3 (DFN) "
         "for 'small'.")
warmup_option = click.option(
    "--warmup-steps", type=AutoOr(int), default="auto", show_default=True,
    help="Linear warm-up steps; auto = Table VI's 2,000 when the run is as long as the paper's (16,770 steps), else "
         "the same share of the run (about 12%).")

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
    "--activation-checkpointing", type=click.Choice(["auto", "none", "itm", "all", "itm-selective", "all-selective"]),
    default="auto", show_default=True,
    help="Recompute Q-Former blocks in the backward to save memory: the ITM passes (most of it) or every "
         "pass; -selective: only their element-wise operations (matrix products and attention kept). Same "
         "losses and gradients; more compute. auto = itm for the paper preset on a GPU, else none.")


compile_option = click.option(
    "--compile/--no-compile", "compile_blocks", default=False, show_default=True,
    help="torch.compile each Q-Former block: fused element-wise kernels (faster on GPUs; about a minute to "
         "compile at the start).")


def given(name: str):
    """The value of option ``name`` if the user typed it, else None (its default does not count)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return ctx.params[name] if ctx.get_parameter_source(name) != ParameterSource.DEFAULT else None


def progress_bar(total: int, desc: str):
    """A tqdm bar (stderr), updated through the callback the library takes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False, disable=None)  # off when not a TTY
