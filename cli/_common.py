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
        import os

        if os.environ.get("MF2_DEBUG"):  # the whole traceback, for a bug report
            return fn(*args, **kwargs)
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


# The one option evaluate and predict share that is not a training setting (mf2 pretrain and
# finetune take theirs from the option table in options.py).
precision_option = click.option(
    "--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
    help="bf16: autocast (float32 master weights and optimizer state); auto = bf16 on GPUs that support it, "
         "fp32 on CPUs.")


def progress_bar(total: int, desc: str):
    """A tqdm bar (stderr), updated through the callback the library takes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False, disable=None)  # off when not a TTY
