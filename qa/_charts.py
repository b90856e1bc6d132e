"""Numeric core of the control charts of :mod:`qa.trend` (arrays in, arrays out).

Nothing here knows about labels, records or the store; :mod:`qa.trend` wraps these
functions into frozen result records. Formulas and sources are in the docstrings of
:mod:`qa.trend`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["moving_ranges", "ewma_statistic", "ewma_half_width", "tabular_cusum",
           "western_electric"]


def moving_ranges(x: np.ndarray) -> np.ndarray:
    """``MR_i = |x_i - x_{i-1}|`` for ``i >= 1``; ``MR_0`` is NaN (no previous point)."""
    mr = np.full(x.shape, np.nan)
    mr[1:] = np.abs(np.diff(x))
    return mr


def ewma_statistic(x: np.ndarray, mu0: float, lam: float) -> np.ndarray:
    """``z_i = lam * x_i + (1 - lam) * z_{i-1}`` with ``z_0 = mu0`` (i counted from 1)."""
    z = np.empty(x.shape)
    previous = mu0
    for i, value in enumerate(x):
        previous = lam * value + (1.0 - lam) * previous
        z[i] = previous
    return z


def ewma_half_width(n: int, sigma: float, lam: float, L: float) -> np.ndarray:
    """``L * sigma * sqrt(lam / (2 - lam) * (1 - (1 - lam)**(2 i)))`` for ``i = 1 .. n``."""
    i = np.arange(1, n + 1, dtype=float)
    return L * sigma * np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2.0 * i)))


def tabular_cusum(x: np.ndarray, mu0: float, k: float, h: float, reset: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-sided tabular CUSUM (Montgomery, ISQC, section 9.1.2).

    ``C+_i = max(0, x_i - (mu0 + k) + C+_{i-1})``, ``C-_i = max(0, (mu0 - k) - x_i + C-_{i-1})``,
    ``C+_0 = C-_0 = 0``; ``N+``/``N-`` count the consecutive periods the sum has been
    positive. With ``reset`` a sum that exceeded ``h`` restarts from 0 (and its count from 0)
    at the next period; without it the sums keep accumulating, as in Montgomery's tables.

    Returns ``(c_plus, c_minus, n_plus, n_minus)``, each of ``x``'s shape.
    """
    c_plus, c_minus = np.empty(x.shape), np.empty(x.shape)
    n_plus, n_minus = np.zeros(x.shape, dtype=int), np.zeros(x.shape, dtype=int)
    cp = cm = 0.0
    np_ = nm = 0
    for i, value in enumerate(x):
        cp = max(0.0, value - (mu0 + k) + cp)
        cm = max(0.0, (mu0 - k) - value + cm)
        np_ = np_ + 1 if cp > 0 else 0
        nm = nm + 1 if cm > 0 else 0
        c_plus[i], c_minus[i], n_plus[i], n_minus[i] = cp, cm, np_, nm
        if reset and cp > h:
            cp, np_ = 0.0, 0
        if reset and cm > h:
            cm, nm = 0.0, 0
    return c_plus, c_minus, n_plus, n_minus


def western_electric(x: np.ndarray, centre: float, sigma: float,
                     rules: tuple[int, ...] = (1, 2, 3, 4)) -> list[list[tuple[int, str]]]:
    """Western Electric rules 1-4 on an individuals series; per point, ``[(rule, side)]``.

    ``side`` is ``"up"`` or ``"down"``. A point is flagged by a rule when it completes the
    pattern and is itself one of the points that make it (see :func:`qa.trend.imr_chart`).
    """
    d = (x - centre) / sigma
    flags: list[list[tuple[int, str]]] = [[] for _ in range(len(x))]
    for sign, side in ((1.0, "up"), (-1.0, "down")):
        s = sign * d
        for i in range(len(x)):
            if 1 in rules and s[i] > 3.0:
                flags[i].append((1, side))
            if 2 in rules and s[i] > 2.0 and np.count_nonzero(s[max(0, i - 2):i + 1] > 2.0) >= 2:
                flags[i].append((2, side))
            if 3 in rules and s[i] > 1.0 and np.count_nonzero(s[max(0, i - 4):i + 1] > 1.0) >= 4:
                flags[i].append((3, side))
            if 4 in rules and i >= 7 and np.all(s[i - 7:i + 1] > 0.0):
                flags[i].append((4, side))
    return flags
