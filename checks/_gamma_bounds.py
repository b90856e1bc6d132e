"""Lower bounds of the squared gamma on a box of one grid cell, and the box-constrained solve.

Private module of :mod:`checks._gamma_cells` (compiled with numba, inlined into its branch
and bound); the algorithm, the notation (``f(q) = sum_k w_k (q_k - p_k)^2 + lam (T(q) -
Dr)^2`` in the evaluated grid's index frame, ``T`` trilinear) and the certificate they give
are described there. Here:

* :func:`_box_solve`: the exact minimiser of ``w|q - p|^2 + lam dist(L(q) - Dr, [-e, e])^2``
  over a box, ``L`` linear (the root of a monotone piecewise-linear equation between at most
  six breakpoints);
* :func:`_box_tangent_bound` / :func:`_tangent_bound`: ``T`` linearised at the box's point
  nearest ``p``, its slack growing as the square of the distance from there;
* :func:`_value_and_gradient`: ``T`` and its gradient at a point of a box (trilinear);
* :func:`_second_order_bound`: ``f`` expanded to second order at a point with a lower bound
  of its Hessian over the box.

Each is a lower bound of ``f`` over the box (tests: ``tests/checks/test_gamma.py`` compares
them with dense sampling of ``f``).
"""

from __future__ import annotations

import math

import numba

__all__: list[str] = []  # private helpers of checks._gamma_cells


@numba.njit(cache=True, inline="always", fastmath=True)
def _clamp(v, lo, hi):
    return min(max(v, lo), hi)


@numba.njit(cache=True, inline="always", fastmath=True)
def _h(rho, a, g0, g1, g2, p0, p1, p2, c0, c1, c2, l0, l1, l2, u0, u1, u2):
    return rho - a - (g0 * _clamp(p0 - c0 * rho, l0, u0) + g1 * _clamp(p1 - c1 * rho, l1, u1)
                      + g2 * _clamp(p2 - c2 * rho, l2, u2))


@numba.njit(cache=True, inline="always", fastmath=True)
def _bp(c, p, bound):
    return (p - bound) / c if c != 0.0 else 0.0


@numba.njit(cache=True, inline="always", fastmath=True)
def _reach(a, direction):
    """Largest ``a * d`` per unit ``|d|`` over the allowed signs of ``d``: ``direction``
    +1 (``d >= 0``), -1 (``d <= 0``), 2 (either sign), 0 (``d = 0``)."""
    if direction == 2.0:
        return abs(a)
    return max(0.0, a * direction)


@numba.njit(cache=True, inline="always", fastmath=True)
def _side(p, lo, hi):
    """Signs ``q - clamp(p)`` can take for ``q`` in ``[lo, hi]`` (see :func:`_reach`)."""
    if hi <= lo:
        return 0.0
    if p <= lo:
        return 1.0
    if p >= hi:
        return -1.0
    return 2.0


@numba.njit(cache=True, inline="always", fastmath=True)
def _hurt(coef, side_a, side_b, sign_r):
    """``|coef|``, or 0 when ``coef d_a d_b`` never lowers ``sign_r * residual`` on the box
    (both signs fixed, see :func:`_side`)."""
    if abs(side_a) == 1.0 and abs(side_b) == 1.0 and sign_r * coef * side_a * side_b >= 0.0:
        return 0.0
    return abs(coef)


@numba.njit(cache=True, inline="always", fastmath=True)
def _tangent_bound(d2, r0, gz, gy, gx, dz, dy, dx, cyx, czx, czy, k3, mz, wz, wy, wx, lam):
    """Lower bound of ``f`` on a box from the tangent of ``T`` at ``o``, the box's point
    nearest ``p`` (index units): ``d2 = w|o - p|^2``, ``r0 = T(o) - Dr``, ``g`` the gradient
    of ``T`` at ``o``, ``dz, dy, dx`` the signs ``q - o`` can take on the box
    (:func:`_side`), ``cyx, czx, czy, k3`` the pure cross-term coefficients of ``T`` at
    ``o`` (``d_y d_x``, ``d_z d_x``, ``d_z d_y``, ``d_z d_y d_x``), ``mz`` the largest
    ``|q_z - o_z|`` on the box.

    Proof. On the box ``T`` is trilinear, so its Taylor expansion at ``o`` is exact:
    ``T(o + d) = T(o) + g.d + R(d)``, ``R = cyx d_y d_x + czx d_z d_x + czy d_z d_y
    + k3 d_z d_y d_x``. Let ``s = sign(r0)``; ``|T - Dr| >= s (r0 + g.d + R)``. Terms whose
    sign is fixed on the box (each ``d_k`` of one sign) and never negative after the
    factor ``s`` are dropped (lower-bounded by 0); the others are at least ``-|coef|`` times
    the product of the ``|d_k|``, with ``|d_z| <= mz`` in the cubic term. With
    ``u_k = sqrt(w_k) d_k``, ``|d_i d_j| <= (u_i^2 + u_j^2) / (2 sqrt(w_i w_j))``, so those
    terms are at least ``-c t^2``, ``t^2 = w|d|^2``, ``c`` the largest resulting
    coefficient of a ``u_k^2``. The linear part: ``s g.d >= -G t`` with
    ``G^2 = sum_k a_k^2 / w_k``, ``a_k`` the part of ``-s g_k`` that ``d_k`` can take
    positive (all of it when ``d_k`` takes both signs, none when its sign makes the term
    non-negative; Cauchy-Schwarz over the allowed orthant). Since ``o`` is the clamp of
    ``p`` into the box, ``w|q - p|^2 >= d2 + t^2`` for ``q = o + d`` in the box (per axis
    the two displacements have the same sign or the first is zero). Hence
    ``f >= d2 + t^2 + lam max(0, psi(t))^2``, ``psi(t) = |r0| - G t - c t^2``. ``psi`` is
    concave, ``psi(0) = |r0|``, ``psi(t0) = 0``, so on ``[0, t0]``
    ``psi(t) >= |r0| (1 - t / t0)`` (above its chord), and
    ``t^2 + S^2 (1 - t/t0)^2 >= S^2 t0^2 / (S^2 + t0^2)`` (``S^2 = lam r0^2``; the
    minimum of a quadratic); for ``t > t0`` the value is at least ``t0^2``, larger.
    So ``f >= d2 + S^2 t0^2 / (S^2 + t0^2)`` on the box (``d2 + S^2`` when ``G = c = 0``).
    The slack grows with ``t^2`` (not with the box size, like the centre model's), and
    the orthant keeps the box's direction from ``p``.
    """
    a = abs(r0)
    sr = 1.0 if r0 >= 0.0 else -1.0
    hyx = _hurt(cyx, dy, dx, sr)
    if dz == 1.0 or dz == -1.0:
        hyx += _hurt(k3 * dz, dy, dx, sr) * mz
    else:
        hyx += abs(k3) * mz
    syx = hyx / (2.0 * math.sqrt(wy * wx))
    szx = _hurt(czx, dz, dx, sr) / (2.0 * math.sqrt(wz * wx))
    szy = _hurt(czy, dz, dy, sr) / (2.0 * math.sqrt(wz * wy))
    c = max(syx + szx, syx + szy, szx + szy)
    az, ay, ax = _reach(-sr * gz, dz), _reach(-sr * gy, dy), _reach(-sr * gx, dx)
    g2 = az * az / wz + ay * ay / wy + ax * ax / wx
    big_g = math.sqrt(g2)
    s2 = lam * a * a
    den = big_g + math.sqrt(g2 + 4.0 * c * a)
    if den <= 0.0:
        return d2 + s2
    t0 = 2.0 * a / den
    t02 = t0 * t0
    if s2 + t02 <= 0.0:
        return d2
    return d2 + s2 * t02 / (s2 + t02)


@numba.njit(cache=True, inline="always", fastmath=True)
def _box_tangent_bound(v0, v1, v2, v3, v4, v5, v6, v7, z0, y0, x0, z1, y1, x1, pz, py, px,
                       dr, lam, wz, wy, wx):
    """:func:`_tangent_bound` of the box ``[z0, z1] x [y0, y1] x [x0, x1]`` (index units)
    with corner doses ``v0..v7`` (index ``4 z + 2 y + x``, 0 the low end), for the point
    ``p``: ``min f`` over the box is at least the returned value."""
    ez, ey, ex = z1 - z0, y1 - y0, x1 - x0
    sz = 1.0 / ez if ez > 0.0 else 0.0
    sy = 1.0 / ey if ey > 0.0 else 0.0
    sx = 1.0 / ex if ex > 0.0 else 0.0
    oz, oy, ox = _clamp(pz, z0, z1), _clamp(py, y0, y1), _clamp(px, x0, x1)
    d2 = wz * (oz - pz) ** 2 + wy * (oy - py) ** 2 + wx * (ox - px) ** 2
    # trilinear coefficients in t = (q - low corner) / extent, at t(o)
    kx, ky, kz = v1 - v0, v2 - v0, v4 - v0
    kyx = v3 - v2 - v1 + v0
    kzx = v5 - v4 - v1 + v0
    kzy = v6 - v4 - v2 + v0
    kzyx = v7 - v6 - v5 - v3 + v4 + v2 + v1 - v0
    tz, ty, tx = (oz - z0) * sz, (oy - y0) * sy, (ox - x0) * sx
    t_val = v0 + kx * tx + ky * ty + kz * tz + kyx * ty * tx + kzx * tz * tx \
        + kzy * tz * ty + kzyx * tz * ty * tx
    return _tangent_bound(
        d2, t_val - dr,
        (kz + kzx * tx + kzy * ty + kzyx * ty * tx) * sz,
        (ky + kyx * tx + kzy * tz + kzyx * tz * tx) * sy,
        (kx + kyx * ty + kzx * tz + kzyx * tz * ty) * sx,
        _side(pz, z0, z1), _side(py, y0, y1), _side(px, x0, x1),
        (kyx + kzyx * tz) * sy * sx, (kzx + kzyx * ty) * sz * sx,
        (kzy + kzyx * tx) * sz * sy, kzyx * sz * sy * sx, max(oz - z0, z1 - oz),
        wz, wy, wx, lam)


@numba.njit(cache=True, inline="always", fastmath=True)
def _value_and_gradient(v0, v1, v2, v3, v4, v5, v6, v7, tz, ty, tx, sz, sy, sx):
    """The trilinear with corner values ``v0..v7`` (index ``4 z + 2 y + x``) at ``t`` in
    ``[0, 1]^3``, and its gradient per index unit (``s`` = 1 / the box's extents)."""
    c00 = v0 + (v1 - v0) * tx
    c01 = v2 + (v3 - v2) * tx
    c10 = v4 + (v5 - v4) * tx
    c11 = v6 + (v7 - v6) * tx
    c0 = c00 + (c01 - c00) * ty
    c1 = c10 + (c11 - c10) * ty
    hz = (c1 - c0) * sz
    hy = ((c01 - c00) + ((c11 - c10) - (c01 - c00)) * tz) * sy
    d0 = (v1 - v0) + ((v3 - v2) - (v1 - v0)) * ty
    d1 = (v5 - v4) + ((v7 - v6) - (v5 - v4)) * ty
    hx = (d0 + (d1 - d0) * tz) * sx
    return c0 + (c1 - c0) * tz, hz, hy, hx


@numba.njit(cache=True, inline="always", fastmath=True)
def _second_order_bound(v0, v1, v2, v3, v4, v5, v6, v7, z0, y0, x0, z1, y1, x1, oz, oy, ox,
                        pz, py, px, dr, lam, wz, wy, wx):
    """Lower bound of ``f`` on the box ``[z0, z1] x [y0, y1] x [x0, x1]`` (index units,
    corner doses ``v0..v7``, index ``4 z + 2 y + x``) from its second-order expansion at a
    point ``o`` of the box; 0 (no information) when the Hessian bound below is not positive.

    Proof. ``f(q) = sum_k w_k (q_k - p_k)^2 + lam (T(q) - Dr)^2`` has the Hessian
    ``2 W + 2 lam (grad T grad T^T + (T - Dr) H_T)``. The first part of the bracket is
    positive semi-definite. ``T`` is trilinear: ``H_T`` has a zero diagonal and off-diagonal
    entries ``d2T/dq_y dq_x = (kyx + kzyx t_z) s_y s_x`` (and alike), whose absolute values
    on the box are at most ``a_yx = max(|kyx|, |kyx + kzyx|) s_y s_x``, ``a_zx``, ``a_zy``;
    by Gershgorin every eigenvalue of ``H_T`` lies in ``[-k, k]``, ``k`` the largest row
    sum of those bounds. ``T`` stays between the smallest and largest corner dose, so
    ``|T - Dr| <= m``, the larger of their distances to ``Dr``. Hence, on the box,
    ``Hess f >= diag(mu)``, ``mu_k = 2 w_k - 2 lam m k``. The box is convex: for ``q`` in
    it, Taylor's formula with the integral remainder along the segment from ``o`` gives
    ``f(q) >= f(o) + g.d + sum_k mu_k d_k^2 / 2``, ``d = q - o``, ``g = grad f(o)``. When
    every ``mu_k > 0`` the right side is separable and convex; its minimum over the box is
    at ``d_k = clamp(-g_k / mu_k)`` to ``[lo_k - o_k, hi_k - o_k]``: that value bounds
    ``f`` from below on the box. At a minimiser ``o`` of ``f`` inside the box ``g = 0``
    and the bound equals ``f(o)``: it certifies the box at once.
    """
    ez, ey, ex = z1 - z0, y1 - y0, x1 - x0
    sz = 1.0 / ez if ez > 0.0 else 0.0
    sy = 1.0 / ey if ey > 0.0 else 0.0
    sx = 1.0 / ex if ex > 0.0 else 0.0
    kyx = v3 - v2 - v1 + v0
    kzx = v5 - v4 - v1 + v0
    kzy = v6 - v4 - v2 + v0
    kzyx = v7 - v6 - v5 - v3 + v4 + v2 + v1 - v0
    a_yx = max(abs(kyx), abs(kyx + kzyx)) * sy * sx
    a_zx = max(abs(kzx), abs(kzx + kzyx)) * sz * sx
    a_zy = max(abs(kzy), abs(kzy + kzyx)) * sz * sy
    k = max(a_yx + a_zx, a_yx + a_zy, a_zx + a_zy)
    vmin = min(min(v0, v1, v2, v3), min(v4, v5, v6, v7))
    vmax = max(max(v0, v1, v2, v3), max(v4, v5, v6, v7))
    m = max(abs(vmin - dr), abs(vmax - dr))
    shrink = 2.0 * lam * m * k
    mz, my, mx = 2.0 * wz - shrink, 2.0 * wy - shrink, 2.0 * wx - shrink
    if mz <= 0.0 or my <= 0.0 or mx <= 0.0:
        return 0.0
    value, hz, hy, hx = _value_and_gradient(v0, v1, v2, v3, v4, v5, v6, v7, (oz - z0) * sz,
                                            (oy - y0) * sy, (ox - x0) * sx, sz, sy, sx)
    diff = value - dr
    fo = wz * (oz - pz) ** 2 + wy * (oy - py) ** 2 + wx * (ox - px) ** 2 + lam * diff * diff
    gz = 2.0 * wz * (oz - pz) + 2.0 * lam * diff * hz
    gy = 2.0 * wy * (oy - py) + 2.0 * lam * diff * hy
    gx = 2.0 * wx * (ox - px) + 2.0 * lam * diff * hx
    dz = _clamp(-gz / mz, z0 - oz, z1 - oz)
    dy = _clamp(-gy / my, y0 - oy, y1 - oy)
    dx = _clamp(-gx / mx, x0 - ox, x1 - ox)
    return fo + gz * dz + 0.5 * mz * dz * dz + gy * dy + 0.5 * my * dy * dy \
        + gx * dx + 0.5 * mx * dx * dx


@numba.njit(cache=True, fastmath=True)
def _box_solve(a, g0, g1, g2, p0, p1, p2, c0, c1, c2, l0, l1, l2, u0, u1, u2):
    """Root ``rho`` of ``rho = a + sum_k g_k clamp(p_k - c_k rho, l_k, u_k)``.

    The right side is non-increasing in ``rho`` (``c_k g_k >= 0``), so the left minus the
    right is increasing and piecewise linear with at most six breakpoints: evaluate it at
    the sorted breakpoints and solve the linear piece that brackets zero.
    """
    b0, b1 = _bp(c0, p0, l0), _bp(c0, p0, u0)
    b2, b3 = _bp(c1, p1, l1), _bp(c1, p1, u1)
    b4, b5 = _bp(c2, p2, l2), _bp(c2, p2, u2)
    # sorting network for six values (12 compare-exchanges)
    if b0 > b1: b0, b1 = b1, b0  # noqa: E701
    if b2 > b3: b2, b3 = b3, b2  # noqa: E701
    if b4 > b5: b4, b5 = b5, b4  # noqa: E701
    if b0 > b2: b0, b2 = b2, b0  # noqa: E701
    if b3 > b5: b3, b5 = b5, b3  # noqa: E701
    if b1 > b4: b1, b4 = b4, b1  # noqa: E701
    if b0 > b1: b0, b1 = b1, b0  # noqa: E701
    if b2 > b3: b2, b3 = b3, b2  # noqa: E701
    if b4 > b5: b4, b5 = b5, b4  # noqa: E701
    if b1 > b2: b1, b2 = b2, b1  # noqa: E701
    if b3 > b4: b3, b4 = b4, b3  # noqa: E701
    if b2 > b3: b2, b3 = b3, b2  # noqa: E701
    prev_b = b0
    prev_h = _h(b0, a, g0, g1, g2, p0, p1, p2, c0, c1, c2, l0, l1, l2, u0, u1, u2)
    if prev_h >= 0.0:
        return b0 - prev_h  # below every breakpoint all terms are clamped: slope 1
    for i in range(1, 6):
        b = b1 if i == 1 else b2 if i == 2 else b3 if i == 3 else b4 if i == 4 else b5
        h = _h(b, a, g0, g1, g2, p0, p1, p2, c0, c1, c2, l0, l1, l2, u0, u1, u2)
        if h >= 0.0:
            span = h - prev_h
            if span <= 0.0:
                return b
            return prev_b + (b - prev_b) * (-prev_h) / span
        prev_b, prev_h = b, h
    return prev_b - prev_h
