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


def progress_bar(total: int, desc: str):
    """A tqdm bar (stderr), updated through the callback the library takes."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=False, disable=None)  # off when not a TTY
