"""The validated options of one call: built once from the public arguments, read by the engine.

:func:`fit_options` checks every fit parameter (through :mod:`._contract` and the image checks of
:mod:`._validation`) and returns a frozen :class:`FitOptions`; the engine reads that object, never
a repacked dict, and :meth:`FitOptions.params` is how a result records what was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _contract as contract
from . import _validation as check


@dataclass(frozen=True)
class FitOptions:
    """Everything a fit needs besides the image, validated and normalised.

    Attributes
    ----------
    n_colors : int or 'auto'
    target_psnr, target_delta_e : float or None
        Only with ``n_colors='auto'``.
    color_space : str
        Lower case, one of :data:`~._contract.COLOR_SPACES`.
    speed : int
        1 to 10.
    init : 'k-means++' or ndarray of float64, shape (n_colors, C)
    fixed_colors : ndarray of float64, shape (m, C), or None
    n_init : int or None
        None: chosen by ``speed``.
    max_iter : int
    tol : float
    seed : int
        The integer seed drawn from ``random_state``.
    dither : float
        The dithering level in [0, 1]; 0 is none.
    """

    n_colors: int | str
    target_psnr: float | None
    target_delta_e: float | None
    color_space: str
    speed: int
    init: Any
    fixed_colors: np.ndarray | None
    n_init: int | None
    max_iter: int
    tol: float
    seed: int
    dither: float = 0.0

    @property
    def max_colors(self) -> int:
        """The most colours this fit may return."""
        return contract.MAX_N_COLORS if self.n_colors == "auto" else int(self.n_colors)

    @property
    def init_colors(self) -> np.ndarray | None:
        """The starting colours, or None for k-means++."""
        return None if isinstance(self.init, str) else self.init

    @property
    def carries_units(self) -> bool:
        """Whether a value of this call is in the image's units (or reads RGB as [0, 1])."""
        return (
            self.init_colors is not None
            or self.fixed_colors is not None
            or self.target_delta_e is not None
            or self.color_space != "rgb"
        )

    def check_units(self, dtype, low: float, high: float) -> None:
        """Refuse colours and targets in other units than a float image's values.

        ``low``/``high``: the visible colour values' range (from the histogram, before the fit).
        """
        check.check_colors_in_data_range(self.init_colors, "init", dtype, low, high)
        check.check_colors_in_data_range(self.fixed_colors, "fixed_colors", dtype, low, high)
        if self.target_delta_e is not None:
            check.check_rgb_unit_range("target_delta_e", self.target_delta_e, dtype, low, high)
        if self.color_space != "rgb":
            check.check_rgb_unit_range("color_space", self.color_space, dtype, low, high)

    def params(self, channel_axis: int | None, has_alpha: bool) -> dict:
        """The parameters used, as plain JSON types; ``random_state`` is the seed drawn."""
        params = {
            "n_colors": self.n_colors,
            "channel_axis": channel_axis,
            "color_space": self.color_space,
            "alpha": bool(has_alpha),
            "speed": self.speed,
            "fixed_colors": None if self.fixed_colors is None else self.fixed_colors.tolist(),
            "n_init": "auto" if self.n_init is None else self.n_init,
            "init": self.init if isinstance(self.init, str) else self.init.tolist(),
            "max_iter": self.max_iter,
            "tol": self.tol,
            "random_state": self.seed,
            "dither": self.dither if self.dither > 0 else False,
        }
        for target in ("target_psnr", "target_delta_e"):
            if getattr(self, target) is not None:
                params[target] = getattr(self, target)
        return params


def fit_options(
    layout,
    *,
    n_colors,
    color_space,
    speed,
    init,
    fixed_colors,
    n_init,
    max_iter,
    tol,
    random_state,
    dither=False,
    target_psnr=None,
    target_delta_e=None,
) -> FitOptions:
    """Validate the fit parameters of one call against the contract and the image."""
    contract.validate("n_colors", n_colors)
    if isinstance(n_colors, str):
        n_colors = n_colors.lower()
    n_channels = layout.n_color_channels
    target_psnr, target_delta_e = check.check_targets(
        n_colors, target_psnr, target_delta_e, n_channels, init
    )
    size = contract.MAX_N_COLORS if n_colors == "auto" else int(n_colors)
    n_init = contract.validate("n_init", n_init)
    init = check.check_init(init, size, n_channels, layout.dtype)
    fixed_colors = check.check_fixed_colors(fixed_colors, size, n_channels, layout.dtype)
    if fixed_colors is not None and not isinstance(init, str):
        # Lloyd from an init array moves every colour: none would stay fixed.
        raise contract.invalid(
            "fixed_colors",
            "be None with an 'init' array (Lloyd runs from init and moves every colour)",
            None,
            got=f"{len(fixed_colors)} fixed colour{'' if len(fixed_colors) == 1 else 's'}",
        )
    return FitOptions(
        n_colors=n_colors if n_colors == "auto" else int(n_colors),
        target_psnr=target_psnr,
        target_delta_e=target_delta_e,
        color_space=check.check_color_space(color_space, n_channels),
        speed=int(contract.validate("speed", speed)),
        init=init,
        fixed_colors=fixed_colors,
        n_init=None if isinstance(n_init, str) else int(n_init),
        max_iter=int(contract.validate("max_iter", max_iter)),
        tol=float(contract.validate("tol", tol)),
        seed=contract.seed_of(random_state),
        dither=contract.dither_level(dither),
    )
