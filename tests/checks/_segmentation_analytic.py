"""Exact surface-distance and overlap values of analytic shapes (spheres, sphere + island).

Used by the segmentation tests as the independent reference. Distances from a point on a
sphere to another sphere's surface are closed form (| |p - c| - r |); the area-weighted
distributions are integrated with the midpoint rule on ``cos(theta)``, which is uniform in
area on a sphere (Archimedes), with ``n`` = 400,000 nodes (error below 1e-4 mm here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_NODES = 400_000


@dataclass(frozen=True)
class Sphere:
    centre_mm: tuple[float, float, float]
    radius_mm: float

    @property
    def area_mm2(self) -> float:
        return 4.0 * math.pi * self.radius_mm ** 2

    @property
    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius_mm ** 3

    def mask(self, shape, spacing_mm, origin_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
        """Voxels whose centre lies inside the sphere."""
        axes = [o + s * np.arange(n) for o, s, n in
                zip(origin_mm, spacing_mm, shape, strict=True)]
        z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
        cz, cy, cx = self.centre_mm
        return (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= self.radius_mm ** 2

    def surface_samples(self, other_axis: np.ndarray) -> np.ndarray:
        """(N, 3) points, equal area each, on rings around ``other_axis`` (unit vector)."""
        u = (np.arange(N_NODES) + 0.5) / N_NODES * 2.0 - 1.0
        axis = np.asarray(other_axis, float)
        axis = axis / np.linalg.norm(axis)
        helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0, 1.0, 0])
        perp = np.cross(axis, helper)
        perp /= np.linalg.norm(perp)
        # golden-angle azimuths spread the ring points; exact for rotationally symmetric pairs
        phi = np.arange(N_NODES) * math.pi * (3.0 - math.sqrt(5.0))
        perp2 = np.cross(axis, perp)
        s = np.sqrt(1.0 - u ** 2)
        dirs = (u[:, None] * axis + s[:, None] * (np.cos(phi)[:, None] * perp
                                                  + np.sin(phi)[:, None] * perp2))
        return np.asarray(self.centre_mm) + self.radius_mm * dirs

    def distance_to_surface(self, points: np.ndarray) -> np.ndarray:
        return np.abs(np.linalg.norm(points - np.asarray(self.centre_mm), axis=1)
                      - self.radius_mm)


def lens_volume_mm3(a: Sphere, b: Sphere) -> float:
    """Volume of the intersection of two balls (closed form)."""
    d = float(np.linalg.norm(np.subtract(a.centre_mm, b.centre_mm)))
    r1, r2 = a.radius_mm, b.radius_mm
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return min(a.volume_mm3, b.volume_mm3)
    return (math.pi * (r1 + r2 - d) ** 2
            * (d * d + 2 * d * r2 - 3 * r2 * r2 + 2 * d * r1 + 6 * r1 * r2 - 3 * r1 * r1)
            / (12 * d))


@dataclass(frozen=True)
class Exact:
    dice: float
    hd95_mm: float
    hd95_pooled_mm: float
    hd_mm: float
    assd_mm: float
    masd_mm: float
    surface_dice: float


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][np.searchsorted(cum, q / 100.0)])


def _exact(dice: float, d_rp: np.ndarray, w_r: np.ndarray, d_pr: np.ndarray, w_p: np.ndarray,
           tolerance_mm: float) -> Exact:
    """The surface metrics from both directed distance samples (``d``, mm) and their area
    weights (``w``, mm²), with the given Dice."""
    all_d, all_w = np.concatenate([d_rp, d_pr]), np.concatenate([w_r, w_p])
    mean_rp = float(np.sum(d_rp * w_r) / w_r.sum())
    mean_pr = float(np.sum(d_pr * w_p) / w_p.sum())
    return Exact(
        dice=dice,
        hd95_mm=max(_weighted_percentile(d_rp, w_r, 95), _weighted_percentile(d_pr, w_p, 95)),
        hd95_pooled_mm=_weighted_percentile(all_d, all_w, 95),
        hd_mm=float(max(d_rp.max(), d_pr.max())),
        assd_mm=float(np.sum(all_d * all_w) / all_w.sum()),
        masd_mm=0.5 * (mean_rp + mean_pr),
        surface_dice=float(all_w[all_d <= tolerance_mm].sum() / all_w.sum()),
    )


def exact_metrics(reference: list[Sphere], predicted: list[Sphere],
                  tolerance_mm: float) -> Exact:
    """Exact metrics of two unions of pairwise-disjoint spheres (within each set).

    Overlap uses lens volumes (each reference sphere meets at most one predicted sphere
    in the cases used); distances use the closed-form point-to-sphere distance, minimised
    over the other set's spheres (the surface of a union of disjoint balls is the union of
    their surfaces).
    """
    def directed(src: list[Sphere], dst: list[Sphere]):
        dists, weights = [], []
        for s in src:
            axis = np.subtract(dst[0].centre_mm, s.centre_mm)
            if np.linalg.norm(axis) == 0:
                axis = np.array([0.0, 0.0, 1.0])
            pts = s.surface_samples(axis)
            d = np.min([t.distance_to_surface(pts) for t in dst], axis=0)
            dists.append(d)
            weights.append(np.full(len(d), s.area_mm2 / len(d)))
        return np.concatenate(dists), np.concatenate(weights)

    d_rp, w_r = directed(reference, predicted)
    d_pr, w_p = directed(predicted, reference)
    vol_r = sum(s.volume_mm3 for s in reference)
    vol_p = sum(s.volume_mm3 for s in predicted)
    inter = sum(lens_volume_mm3(a, b) for a in reference for b in predicted)
    return _exact(2 * inter / (vol_r + vol_p), d_rp, w_r, d_pr, w_p, tolerance_mm)


REFERENCE_SPACING_MM = (2.5, 0.98, 0.98)


@lru_cache(maxsize=1)
def reference_pair():
    """REFERENCE.md's pair: r 30 mm vs 31.5 mm shifted 2 mm, 2.5 x 0.98 x 0.98 mm voxels,
    off-centre by a fraction of a voxel. Returns (exact metrics at 2 mm, reference mask,
    predicted mask); cached so that every test module shares one computation."""
    shape = (32, 76, 76)
    centre = (np.array(shape) * np.array(REFERENCE_SPACING_MM) / 2
              + np.array([0.3, 0.17, -0.21]))
    ref, pred = Sphere(tuple(centre), 30.0), Sphere(tuple(centre + [0, 0, 2.0]), 31.5)
    a = ref.mask(shape, REFERENCE_SPACING_MM)
    b = pred.mask(shape, REFERENCE_SPACING_MM)
    a.flags.writeable = False
    b.flags.writeable = False
    return exact_metrics([ref], [pred], 2.0), a, b


@lru_cache(maxsize=2)
def reference_pair_result(method: str):
    """``compare_masks`` of :func:`reference_pair` at 2 mm (cached)."""
    from checks.segmentation import compare_masks
    from qa.volume import Volume

    _, a, b = reference_pair()
    return compare_masks(Volume(a, REFERENCE_SPACING_MM), Volume(b, REFERENCE_SPACING_MM),
                         2.0, method=method)


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid, semi-axes (z, y, x) in mm."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]

    @property
    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.semi_axes_mm))

    def inside(self, points: np.ndarray) -> np.ndarray:
        q = (points - np.asarray(self.centre_mm)) / np.asarray(self.semi_axes_mm)
        return np.sum(q * q, axis=-1) <= 1.0

    def mask(self, shape, spacing_mm, origin_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
        axes = [o + s * np.arange(n) for o, s, n in
                zip(origin_mm, spacing_mm, shape, strict=True)]
        z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
        (cz, cy, cx), (az, ay, ax) = self.centre_mm, self.semi_axes_mm
        return ((z - cz) / az) ** 2 + ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= 1.0

    def surface_samples(self, n_u: int = 600, n_phi: int = 300):
        """(N, 3) points and (N,) area weights (mm^2): midpoint rule in (cos theta, phi)."""
        u = (np.arange(n_u) + 0.5) / n_u * 2.0 - 1.0
        phi = (np.arange(n_phi) + 0.5) / n_phi * 2.0 * math.pi
        u, phi = (g.ravel() for g in np.meshgrid(u, phi, indexing="ij"))
        s = np.sqrt(1.0 - u * u)
        az, ay, ax = self.semi_axes_mm
        points = np.asarray(self.centre_mm) + np.column_stack(
            [az * u, ay * s * np.sin(phi), ax * s * np.cos(phi)])
        d_u = np.column_stack([np.full_like(u, az), -ay * u / s * np.sin(phi),
                               -ax * u / s * np.cos(phi)])
        d_phi = np.column_stack([np.zeros_like(u), ay * s * np.cos(phi), -ax * s * np.sin(phi)])
        weights = np.linalg.norm(np.cross(d_u, d_phi), axis=1) * (2.0 / n_u) * (
            2.0 * math.pi / n_phi)
        return points, weights

    def distance_to_surface(self, points: np.ndarray) -> np.ndarray:
        """Exact distance to the ellipsoid surface: root of Eberly's secular equation
        sum (e_i y_i / (t + e_i^2))^2 = 1 by 64 bisection steps (float64 resolution)."""
        e = np.asarray(self.semi_axes_mm, float)
        y = np.abs(points - np.asarray(self.centre_mm)) + 1e-12
        lo = np.full(len(y), -np.min(e) ** 2 + 1e-12)
        hi = np.max(e) * np.linalg.norm(y, axis=1) + 1.0
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            f = np.sum((e * y / (mid[:, None] + e * e)) ** 2, axis=1) - 1.0
            lo = np.where(f > 0, mid, lo)
            hi = np.where(f > 0, hi, mid)
        t = 0.5 * (lo + hi)
        closest = e * e * y / (t[:, None] + e * e)
        return np.linalg.norm(closest - y, axis=1)


def exact_metrics_sampled(ref, pred, tolerance_mm: float, *, box_mm, step_mm: float = 0.1):
    """Exact metrics of two shapes with ``surface_samples`` / ``distance_to_surface`` /
    ``inside``; Dice by midpoint integration on a ``step_mm`` grid over ``box_mm``
    ((lo_z, lo_y, lo_x), (hi_z, hi_y, hi_x))."""
    def directed(src, dst):
        points, weights = src.surface_samples()
        return dst.distance_to_surface(points), weights

    d_rp, w_r = directed(ref, pred)
    d_pr, w_p = directed(pred, ref)
    lo, hi = (np.asarray(b, float) for b in box_mm)
    axes = [np.arange(a + step_mm / 2, b, step_mm) for a, b in zip(lo, hi, strict=True)]
    inter = n_r = n_p = 0
    for z in axes[0]:  # slab by slab: bounded memory
        yy, xx = np.meshgrid(axes[1], axes[2], indexing="ij")
        pts = np.stack([np.full(yy.shape, z), yy, xx], axis=-1).reshape(-1, 3)
        in_r, in_p = ref.inside(pts), pred.inside(pts)
        inter += int(np.count_nonzero(in_r & in_p))
        n_r += int(np.count_nonzero(in_r))
        n_p += int(np.count_nonzero(in_p))
    return _exact(2 * inter / (n_r + n_p), d_rp, w_r, d_pr, w_p, tolerance_mm)
