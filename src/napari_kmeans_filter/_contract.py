"""The parameter contract: every public parameter's type, range, units and message, declared once.

In the manner of scikit-learn's ``_parameter_constraints`` (``sklearn/utils/_param_validation.py``),
each public parameter of :func:`~napari_kmeans_filter.quantize`,
:func:`~napari_kmeans_filter.fit_palette` and :func:`~napari_kmeans_filter.apply_palette` is
declared here as data: the constraints its value may satisfy (:class:`Interval`, :class:`Options`,
...), its units, its default and, where a user interface offers a narrower range on purpose, that
range beside the rule it narrows (:attr:`Parameter.ui`).

Everything else reads this table instead of retyping a rule:

* the public functions validate their arguments with :func:`validate`;
* the command line builds its option types, help ranges and choices from it and translates an
  :class:`InvalidParameterError` into its own words once;
* the napari widget takes its controls' ranges, defaults and tooltips from it;
* the scikit-learn estimator converts the constraints to scikit-learn's own.

The few constraint classes are written here rather than imported from scikit-learn: importing
``sklearn.utils._param_validation`` costs ~0.7 s, which every command-line call would pay.

Checks that need the image (a channel axis within its dimensions, colours in its units, a mask of
its spatial shape) live in :mod:`._validation` and raise the same :class:`InvalidParameterError`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_N_COLORS = 4096
# More entries than this on the channel axis is almost always a spatial axis of a greyscale stack
# passed without channel_axis=None.
MAX_CHANNELS = 16
COLOR_SPACES = ("rgb", "lab", "oklab")
# Seeds are 32-bit (numpy's RandomState takes [0, 2**32 - 1]).
MAX_SEED = 2**32 - 1


class InvalidParameterError(ValueError, TypeError):
    """A parameter outside its contract (a ``ValueError`` and a ``TypeError``, as scikit-learn's).

    Every message has one shape, ``The 'name' parameter must <requirement>. Got <got> instead.``
    followed by an optional hint, and the parts are kept so that a shell can say the same in its
    own words (an option name, a control's label).

    Attributes
    ----------
    parameter : str
        The public parameter's name (``"n_colors"``).
    requirement : str
        What the value must satisfy, as a verb phrase (``"be an int in the range [1, 4096]"``).
    got : str
        The value received, as shown to the user.
    hint : str
        An optional sentence on how to fix it (may be empty).
    """

    def __init__(self, parameter: str, requirement: str, got: str, hint: str = ""):
        self.parameter = parameter
        self.requirement = requirement
        self.got = got
        self.hint = hint
        message = f"The {parameter!r} parameter must {requirement}. Got {got} instead."
        super().__init__(f"{message} {hint}" if hint else message)

    def __reduce__(self):
        # Picklable with its parts (dask.distributed sends exceptions between processes).
        return (type(self), (self.parameter, self.requirement, self.got, self.hint))


def shown(value: Any) -> str:
    """How a received value appears in a message: short, never a whole array."""
    if isinstance(value, np.ndarray) or (hasattr(value, "__array__") and hasattr(value, "shape")):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------
# Constraints: what one value may be
# ----------------------------------------------------------------------------------------------


class Constraint:
    """One way a parameter's value may be acceptable."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """A noun phrase, e.g. ``"an int in the range [1, 4096]"``."""
        raise NotImplementedError

    def from_text(self, text: str) -> Any:
        """The value that ``text`` (typed by a user) stands for; ``ValueError`` if none."""
        raise ValueError(text)


@dataclass(frozen=True)
class Interval(Constraint):
    """A real or integral number within ``[low, high]`` (scikit-learn's ``Interval``).

    Parameters
    ----------
    kind : {"int", "float"}
        ``"int"`` accepts integers only; ``"float"`` accepts any finite real number (integers
        included), as scikit-learn's ``Real``.
    low, high : float or None
        The bounds; None is unbounded.
    closed : {"both", "left", "right", "neither"}
        Which bounds belong to the interval.
    """

    kind: str
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        return self.contains(value)

    def contains(self, value: float) -> bool:
        """Whether the number ``value`` lies within the bounds (its type not checked)."""
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def bounds_text(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"{left}{low}, {high}{right}"

    def describe(self) -> str:
        noun = "an int" if self.kind == "int" else "a float"
        if self.low is None and self.high is None:
            return noun
        return f"{noun} in the range {self.bounds_text()}"

    def from_text(self, text: str) -> Any:
        text = text.strip()
        if self.kind == "int":
            return int(text, 10)
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value


@dataclass(frozen=True)
class Options(Constraint):
    """One of a few strings (scikit-learn's ``StrOptions``); matched without case."""

    values: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value.lower() in self.values

    def describe(self) -> str:
        if len(self.values) == 1:
            return repr(self.values[0])
        return "one of " + ", ".join(map(repr, self.values))

    def from_text(self, text: str) -> Any:
        if text.strip().lower() in self.values:
            return text.strip().lower()
        raise ValueError(text)


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (numpy booleans too)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class NoneValue(Constraint):
    """``None``: the parameter is left out."""

    def accepts(self, value: Any) -> bool:
        return value is None

    def describe(self) -> str:
        return "None"

    def from_text(self, text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        raise ValueError(text)


@dataclass(frozen=True)
class ArrayLike(Constraint):
    """A numeric array (numpy, dask or anything ``numpy.asarray`` takes)."""

    what: str = "an array"

    def accepts(self, value: Any) -> bool:
        return value is not None and not isinstance(value, (str, bytes, bool, np.bool_))

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class RandomStates(Constraint):
    """A numpy ``RandomState`` or ``Generator`` instance."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (np.random.RandomState, np.random.Generator))

    def describe(self) -> str:
        return "a numpy RandomState or Generator"


@dataclass(frozen=True)
class CallableValue(Constraint):
    """Any callable."""

    def accepts(self, value: Any) -> bool:
        return callable(value)

    def describe(self) -> str:
        return "a callable"


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of a class named by ``name`` (resolved lazily, to keep the contract a leaf)."""

    name: str
    module: str

    def accepts(self, value: Any) -> bool:
        import importlib

        cls = getattr(importlib.import_module(self.module, __package__), self.name)
        return isinstance(value, cls)

    def describe(self) -> str:
        return f"a {self.name}"


# ----------------------------------------------------------------------------------------------
# Parameters: the table
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One public parameter: its constraints, units, default and meaning.

    Attributes
    ----------
    name : str
        The keyword of the public functions.
    constraints : tuple of Constraint
        The value must satisfy at least one.
    default : object
        The public functions' default (their signatures read it from here).
    units : str
        What a number means: ``"colours"``, ``"dB"``, ... (empty when it has none).
    doc : str
        One line, for help texts and tooltips.
    ui : Interval or None
        A narrower range that interactive controls offer on purpose (a slider that ends where
        useful values end), declared beside the rule it narrows; None: the rule's own range.
    ui_reason : str
        Why the user interface narrows the range.
    """

    name: str
    constraints: tuple[Constraint, ...]
    default: Any = None
    units: str = ""
    doc: str = ""
    ui: Interval | None = None
    ui_reason: str = ""

    def describe(self) -> str:
        """All accepted forms, e.g. ``"an int in the range [1, 4096] (colours) or 'auto'"``."""
        units = f" ({self.units})" if self.units else ""
        texts = [
            c.describe() + (units if isinstance(c, Interval) else "") for c in self.constraints
        ]
        if len(texts) == 1:
            return texts[0]
        return ", ".join(texts[:-1]) + " or " + texts[-1]

    def requirement(self) -> str:
        return f"be {self.describe()}"

    @property
    def interval(self) -> Interval | None:
        """The numeric rule, if the parameter has one."""
        return next((c for c in self.constraints if isinstance(c, Interval)), None)

    @property
    def options(self) -> tuple[str, ...]:
        """The string options, if any."""
        return tuple(v for c in self.constraints if isinstance(c, Options) for v in c.values)

    def ui_interval(self) -> Interval | None:
        """The range an interactive control offers: :attr:`ui`, else the rule's own."""
        return self.ui if self.ui is not None else self.interval

    def error(self, value: Any, hint: str = "") -> InvalidParameterError:
        return InvalidParameterError(self.name, self.requirement(), shown(value), hint)

    def check(self, value: Any) -> Any:
        """``value`` if some constraint accepts it, else :class:`InvalidParameterError`."""
        if any(c.accepts(value) for c in self.constraints):
            return value
        raise self.error(value)

    def from_text(self, text: str) -> Any:
        """Read a value typed by a user (the command line) and :meth:`check` it."""
        for constraint in self.constraints:
            try:
                value = constraint.from_text(text)
            except (ValueError, OverflowError):
                continue
            return self.check(value)
        raise InvalidParameterError(self.name, self.requirement(), repr(text))


def _param(name, *constraints, **details) -> Parameter:
    return Parameter(name, tuple(constraints), **details)


_OPTIONAL = NoneValue()

PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        _param("image", ArrayLike("an array of integers or floats with at least 2 dimensions")),
        _param(
            "n_colors",
            Interval("int", 1, MAX_N_COLORS),
            Options(("auto",)),
            default=8,
            units="colours",
            doc="how many colours to keep, or 'auto': the fewest reaching a target",
            # One colour is a valid fit (the mean colour) but not a useful filter to click.
            ui=Interval("int", 2, MAX_N_COLORS),
            ui_reason="one colour is a flat image: controls start at 2",
        ),
        _param(
            "channel_axis",
            Interval("int", None, None),
            _OPTIONAL,
            default=-1,
            doc="axis of the colour channels; None for intensity images",
        ),
        _param(
            "color_space",
            Options(COLOR_SPACES),
            default="rgb",
            doc="where colour distances are measured; lab and oklab are perceptual (RGB only)",
        ),
        _param(
            "alpha",
            Boolean(),
            _OPTIONAL,
            default=None,
            doc="whether the last channel is alpha; None: yes with 4 channels on the last axis",
        ),
        _param(
            "speed",
            Interval("int", 1, 10),
            default=4,
            doc="1 (most thorough) to 10 (fastest), pngquant's convention",
        ),
        _param("mask", ArrayLike("a boolean array"), _OPTIONAL, doc="pixels that vote in the fit"),
        _param(
            "sample_weight",
            ArrayLike("an array of non-negative weights"),
            _OPTIONAL,
            doc="per-pixel importance in the fit",
        ),
        _param(
            "fixed_colors",
            ArrayLike("an (m, channels) array of colours"),
            _OPTIONAL,
            units="the image's units",
            doc="colours the palette must contain exactly, first",
        ),
        _param(
            "dither",
            Boolean(),
            Interval("float", 0.0, 1.0),
            default=False,
            units="share of the error passed on",
            doc="Floyd-Steinberg error diffusion: False, True (full) or a level",
        ),
        _param(
            "target_psnr",
            Interval("float", 0.0, 200.0, closed="right"),
            _OPTIONAL,
            units="dB",
            doc="with n_colors='auto': the PSNR the result must reach",
            # Above ~60 dB an 8-bit photo keeps nearly all its colours; a control ends at 80 dB.
            ui=Interval("float", 10.0, 80.0),
            ui_reason="below 10 dB and above 80 dB no photo is usefully quantised",
        ),
        _param(
            "target_delta_e",
            Interval("float", 0.0, 100.0, closed="right"),
            _OPTIONAL,
            units="mean CIEDE2000",
            doc="with n_colors='auto', RGB: the mean colour difference allowed at most",
        ),
        _param(
            "n_init",
            Interval("int", 1, None),
            Options(("auto",)),
            default="auto",
            doc="number of k-means++ starts; 'auto' lets speed decide",
        ),
        _param(
            "init",
            Options(("k-means++",)),
            ArrayLike("an (n_colors, channels) array of starting colours"),
            default="k-means++",
            units="the image's units",
            doc="how the fit starts",
        ),
        _param(
            "max_iter",
            Interval("int", 1, None),
            default=300,
            doc="most Lloyd iterations per start",
        ),
        _param(
            "tol",
            Interval("float", 0.0, None),
            default=1e-4,
            units="times the data's variance",
            doc="Lloyd stops when the centres move less (scikit-learn's definition)",
        ),
        _param(
            "random_state",
            Interval("int", 0, MAX_SEED),
            RandomStates(),
            _OPTIONAL,
            default=0,
            doc="seed of the k-means++ starts; the same seed gives the same result",
            # Qt's spin boxes hold a C int.
            ui=Interval("int", 0, 2**31 - 1),
            ui_reason="Qt spin boxes hold a 32-bit signed int",
        ),
        _param(
            "progress",
            CallableValue(),
            _OPTIONAL,
            default=None,
            doc="progress(fraction, message), called as the work advances",
        ),
        _param("palette", InstanceOf("Palette", "._quantize"), doc="the colours to paint with"),
        _param(
            "frame_axis",
            Interval("int", None, None),
            _OPTIONAL,
            default=None,
            doc="an axis of the labels to count clusters along",
        ),
    )
}


def parameter(name: str) -> Parameter:
    """The declared :class:`Parameter` called ``name``."""
    return PARAMETERS[name]


def default(name: str) -> Any:
    """The declared default of parameter ``name`` (the public signatures use it)."""
    return PARAMETERS[name].default


def validate(name: str, value: Any) -> Any:
    """Check ``value`` against parameter ``name``'s declared constraints and return it."""
    return PARAMETERS[name].check(value)


def invalid(
    name: str, requirement: str, value: Any, hint: str = "", *, got: str | None = None
) -> InvalidParameterError:
    """An error for a check that needs context (the image): same shape as the declared ones."""
    return InvalidParameterError(name, requirement, shown(value) if got is None else got, hint)


def describe_range(name: str, *, ui: bool = False) -> str:
    """``"1 to 4096"``: a numeric parameter's range for help texts and tooltips."""
    interval = PARAMETERS[name].ui_interval() if ui else PARAMETERS[name].interval
    low = "-inf" if interval.low is None else _number(interval.low)
    high = "inf" if interval.high is None else _number(interval.high)
    return f"{low} to {high}"


# ----------------------------------------------------------------------------------------------
# Normalised values
# ----------------------------------------------------------------------------------------------


def dither_level(value: Any) -> float:
    """The dithering level in [0, 1] that ``dither`` stands for: ``True`` is 1, ``False`` 0."""
    validate("dither", value)
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    return float(value)


def seed_of(random_state: Any) -> int:
    """The integer seed that ``random_state`` stands for (drawn from it when not an int).

    Recorded in ``QuantizeResult.params`` so that any result can be redone.
    """
    validate("random_state", random_state)
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    return int(random_state)


__all__ = [
    "COLOR_SPACES",
    "MAX_CHANNELS",
    "MAX_N_COLORS",
    "MAX_SEED",
    "PARAMETERS",
    "ArrayLike",
    "Boolean",
    "CallableValue",
    "Constraint",
    "InstanceOf",
    "Interval",
    "InvalidParameterError",
    "NoneValue",
    "Options",
    "Parameter",
    "RandomStates",
    "default",
    "describe_range",
    "dither_level",
    "invalid",
    "parameter",
    "seed_of",
    "validate",
]
