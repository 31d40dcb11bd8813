"""The map as a picture: the raster drawn with a colour bar, a graticule and region outlines."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from psm_db.maps.raster import Raster
from psm_db.maps.scores import LAYERS


def shared_limits(arrays: Iterable[np.ndarray]) -> tuple[float, float]:
    """One (vmin, vmax) over several maps, so maps of different hours compare honestly."""
    lo, hi = math.inf, -math.inf
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        a = a[np.isfinite(a)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if not math.isfinite(lo):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = max(abs(lo) * 1e-3, 1e-9)
        return lo - pad, hi + pad
    return lo, hi


def _graticule_step(span: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 45, 90):
        if span / step <= 8:
            return float(step)
    return 90.0


def _polygon_rings(geom: object) -> list[np.ndarray]:
    """Exterior and interior rings of a shapely (Multi)Polygon as (N, 2) arrays."""
    rings: list[np.ndarray] = []
    polys = getattr(geom, "geoms", [geom])
    for p in polys:
        if not hasattr(p, "exterior"):
            continue
        rings.append(np.asarray(p.exterior.coords))
        rings.extend(np.asarray(r.coords) for r in p.interiors)
    return rings


def render_png(
    raster: Raster,
    *,
    vmin: float,
    vmax: float,
    layer: str = "probability",
    title: str = "",
    outlines: Sequence[tuple[str, object]] = (),
    marker: tuple[float, float] | None = None,
    width_px: int = 900,
    dpi: int = 100,
) -> bytes:
    """Draw the raster with a colour bar, a lon/lat graticule and region outlines; return PNG bytes.

    Args:
        raster: The score raster.
        vmin: Bottom of the colour scale.
        vmax: Top of the colour scale.
        layer: One of :data:`LAYERS` (sets the colour map and the colour-bar label).
        title: Figure title.
        outlines: (label, shapely geometry) pairs drawn as outlines.
        marker: (lon, lat) of a chosen tile, drawn as a cross.
        width_px: Output width in pixels.
        dpi: Output resolution.
    """
    label, cmap = LAYERS[layer]
    left, right, bottom, top = raster.extent
    mid_lat = 0.5 * (bottom + top)
    aspect = 1.0 / max(math.cos(math.radians(mid_lat)), 0.05)
    span_x, span_y = right - left, (top - bottom) * aspect
    ratio = span_y / max(span_x, 1e-12)
    fig_w = width_px / dpi
    fig_h = fig_w * ratio * 0.8 + 1.0
    if fig_h > 9.0:  # tall regions: narrow the figure instead of leaving empty margins
        fig_h = 9.0
        fig_w = max(5.0, (fig_h - 1.0) / (ratio * 0.8))
    fig_h = max(fig_h, 3.0)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    # Fixed boxes (no tight_layout, which draws the figure a second time): the map, then the bar.
    ax = fig.add_axes((0.1, 0.1, 0.72, 0.8))
    cax = fig.add_axes((0.86, 0.15, 0.025, 0.7))
    ax.set_facecolor("#e8e8e8")
    # Colour the cells once (uint8 RGBA, transparent where no tile) so matplotlib only scales pixels.
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    colours = colormaps[cmap]
    rgba = colours(norm(np.nan_to_num(raster.values, nan=vmin)), bytes=True)
    rgba[~np.isfinite(raster.values), 3] = 0
    ax.imshow(rgba, extent=raster.extent, origin="upper", interpolation="nearest", aspect=aspect)
    img = ScalarMappable(norm=norm, cmap=colours)
    for name, geom in outlines:
        for ring in _polygon_rings(geom):
            ax.plot(ring[:, 0], ring[:, 1], color="white", lw=1.6)
            ax.plot(ring[:, 0], ring[:, 1], color="black", lw=0.7)
        if name:
            c = geom.representative_point()  # type: ignore[attr-defined]
            ax.annotate(name, (c.x, c.y), fontsize=7, ha="center", color="black",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0})
    if marker is not None:
        ax.plot([marker[0]], [marker[1]], marker="x", color="red", ms=12, mew=2.5)
    step = _graticule_step(max(right - left, top - bottom))
    ax.set_xticks(np.arange(math.ceil(left / step) * step, right + 1e-9, step))
    ax.set_yticks(np.arange(math.ceil(bottom / step) * step, top + 1e-9, step))
    ax.grid(True, color="white", lw=0.5, alpha=0.7)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    if title:
        fig.suptitle(textwrap.fill(title, 110), fontsize=8, y=0.985)
    bar = fig.colorbar(img, cax=cax)
    bar.set_label(label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buf.getvalue()
