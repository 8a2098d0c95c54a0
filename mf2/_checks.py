"""The one check of a numeric argument, for the library and the CLI alike.

``number(name, value, ...)`` accepts Python and numpy integers and reals (``numbers.Integral``,
``numbers.Real``: ``np.int64(2)``, ``np.float32(0.3)``) and returns a plain ``int`` or ``float``;
it refuses, with one ``ValueError`` line naming the argument, what was expected and what was
given: ``True``/``False`` (not numbers here, though Python counts them as 0 and 1), strings
(``"2"``: the library does not guess; the CLI parses its text first), ``None`` unless allowed,
NaN and infinities, a fraction where a whole number is needed, and values out of range.

    number("batch_size", 32, integer=True, low=1)          # -> 32
    number("smooth", np.float32(0.5), low=0, low_open=True) # -> 0.5
    number("fps", "1", low=0)   # ValueError: fps: expected a number >= 0, got '1' (a str)
"""

from __future__ import annotations

import math
import numbers


def expected(integer: bool = False, low=None, high=None, low_open: bool = False, high_open: bool = False,
             none: bool = False, words=()) -> str:
    """'an integer >= 1', 'a number in [0, 1]', 'None or a number > 0', "'auto' or an integer >= 0", ..."""
    kind = "an integer" if integer else "a number"
    if low is not None and high is not None:
        kind += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        kind += f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        kind += f" {'<' if high_open else '<='} {high:g}"
    options = [*map(repr, words), *(["None"] if none else []), kind]
    return ", ".join(options[:-1]) + " or " + kind if len(options) > 1 else kind


def _given(value) -> str:
    plain = isinstance(value, (int, float)) and not isinstance(value, bool) or value is None
    return repr(value) if plain else f"{value!r} (a {type(value).__name__})"


def number(name: str, value, *, integer: bool = False, low=None, high=None, low_open: bool = False,
           high_open: bool = False, none: bool = False, words=(), note: str = ""):
    """``value`` as a plain int (``integer``) or float, checked; ``none``: None is allowed (and
    returned), ``words``: these strings too (e.g. 'auto'). ``note`` is added to the message (what
    the argument means, e.g. '(seconds)')."""
    if value is None and none or isinstance(value, str) and value in words:
        return value

    def fail(finite: bool = False):
        what = expected(integer, low, high, low_open, high_open, none, words)
        if finite:  # NaN and infinities: say what was wrong with them
            what = what.replace("a number", "a finite number").replace("an integer", "a finite integer")
        return ValueError(f"{name}: expected {what}{f' {note}' if note else ''}, got {_given(value)}")

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail()
    if isinstance(value, numbers.Integral):
        out = int(value)
    else:
        # numpy's float32 0.3 is 0.3 (its shortest form), not 0.30000001192092896
        out = float(str(value)) if type(value).__module__ == "numpy" else float(value)
        if not math.isfinite(out):
            raise fail(finite=True)
        if integer:
            if not out.is_integer():
                raise fail()
            out = int(out)
    if low is not None and (out <= low if low_open else out < low):
        raise fail()
    if high is not None and (out >= high if high_open else out > high):
        raise fail()
    return out


def flag(name: str, value, *, none: bool = False):
    """``value`` as a bool: True/False (numpy's too); ``none``: None as well."""
    if value is None and none:
        return None
    import numpy as np

    if isinstance(value, (bool, np.bool_)):  # (numpy 2 names its type 'bool', not 'bool_')
        return bool(value)
    raise ValueError(f"{name}: expected True or False{' or None' if none else ''}, got {_given(value)}")


def path(name: str, value, *, none: bool = False):
    """``value`` as a path string: a str or ``os.PathLike`` (not empty); ``none``: None as well."""
    import os

    if value is None and none:
        return None
    if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip():
        return os.fspath(value)
    raise ValueError(f"{name}: expected a file path{' or None' if none else ''}, got {_given(value)}")


def au_thresholds(name: str, value, none: bool = True):
    """None (if ``none``), one probability, or one per AU (12, in the order of ``AUS``), each
    checked with ``number``: a plain float, or a tuple of 12."""
    import numbers as _n

    from mf2.data.labels import AUS

    if value is None or isinstance(value, (_n.Real, str)):
        return number(name, value, low=0, high=1, none=none)
    try:
        values = list(value)
    except TypeError:
        values = None
    if values is None or len(values) != len(AUS):
        raise ValueError(f"{name}: expected {'None, ' if none else ''}a number in [0, 1] or {len(AUS)} of them "
                         f"(one per AU: {', '.join(AUS)}), got {_given(value)}")
    return tuple(number(f"{name} of {a}", v, low=0, high=1) for a, v in zip(AUS, values))
