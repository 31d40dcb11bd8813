"""Derive the dashboard's offline coastlines from the land mask the world already uses.

Writes psm_db/maps/coastlines.geojson: the 0.5 contour of the global land mask sampled every
STEP degrees, as simplified lines. Run once when the asset needs rebuilding:

    .venv/bin/python scripts/make_coastlines.py
"""

from __future__ import annotations

import json
from pathlib import Path

import contourpy
import numpy as np
import shapely

STEP = 0.2
TOLERANCE = 0.05
OUT = Path(__file__).resolve().parents[1] / "psm_db" / "maps" / "coastlines.geojson"


def main() -> None:
    """Sample the land mask, trace its coastline and write the asset."""
    from global_land_mask import globe

    lat = np.arange(-90 + STEP / 2, 90, STEP)
    lon = np.arange(-180 + STEP / 2, 180, STEP)
    rows = globe.lat_to_index(lat)
    cols = globe.lon_to_index(lon)
    mask = globe._mask[np.ix_(rows, cols)].astype(np.float32)
    lines = contourpy.contour_generator(lon, lat, mask).lines(0.5)
    geoms = [shapely.simplify(shapely.LineString(line), TOLERANCE) for line in lines if len(line) >= 4]
    coords = [np.round(np.asarray(g.coords), 3).tolist() for g in geoms if g.length > 3 * STEP]
    OUT.write_text(json.dumps({"type": "Feature", "properties": {"source": "global-land-mask", "step_deg": STEP},
                               "geometry": {"type": "MultiLineString", "coordinates": coords}},
                              separators=(",", ":")))
    print(f"wrote {OUT}: {len(coords)} lines, {sum(map(len, coords))} points, {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
