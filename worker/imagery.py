"""Imagery sources for embedding: the synthetic world's renderer, a GeoTIFF/COG, a folder of GeoTIFF tiles.

Every source turns grid tiles (:class:`psm_db.tiles.TileSet`) into a float32 batch
``(n, 3, S, S)`` in [0, 1], where S is the model's input size and each tile covers its
grid footprint (``gsd * size_px * zoom`` metres), so no further zoom transform is needed.

Rasters are read window by window: one decimated window read per chunk (at about the
output resolution), then reprojected per grid row to EPSG:4326 with rasterio/GDAL.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from psm_db.rasters import gdal_path, is_remote, source_name
from psm_db.tiles import METRES_PER_DEGREE, GridSpec, TileSet

log = logging.getLogger(__name__)

SOURCE_KINDS = ("world", "geotiff", "folder")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt")


@dataclass(frozen=True)
class ImagerySpec:
    """Which imagery to embed, as small JSON-able values (kept in the job's params).

    Attributes:
        kind: ``world`` (the synthetic renderer), ``geotiff`` (one GeoTIFF or COG) or
            ``folder`` (a folder of georeferenced GeoTIFF tiles).
        path: The raster file or folder (geotiff, folder).
        seed: The world's seed (world).
        imagery: The world's imagery kind, ``sentinel`` or ``highres`` (world).
        gsd: Ground sample distance at zoom 1, metres per pixel. None: the world kind's GSD,
            or the raster's own resolution.
        size_px: Tile size at zoom 1 in pixels (Sentinel-2 tiles: 256).
        name: The name the tiles are stored under (default derived from kind and path).
        bands: 1-based band numbers read as red, green, blue (None: bands 1-3, or band 1 three
            times for a single-band raster).
        min_valid: A tile is embedded only when at least this share of its pixels holds data
            (not nodata, masked or outside the raster); the others are skipped and counted.
    """

    kind: str = "world"
    path: str | None = None
    seed: int = 0
    imagery: str = "sentinel"
    gsd: float | None = None
    size_px: int = 256
    name: str | None = None
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bands is not None:
            bands = tuple(self.bands)
            if len(bands) not in (1, 3) or any(isinstance(b, bool) or int(b) != b or b < 1 for b in bands):
                raise ValueError(f"bands must be one or three 1-based band numbers (e.g. 4,3,2), got {self.bands!r}")
            object.__setattr__(self, "bands", tuple(int(b) for b in bands))
        if not 0.0 <= float(self.min_valid) <= 1.0:
            raise ValueError(f"min_valid must lie in [0, 1], got {self.min_valid!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagerySpec:
        """Rebuild from :meth:`to_dict` output."""
        data = dict(data)
        if data.get("bands") is not None:
            data["bands"] = tuple(data["bands"])
        return cls(**data)


class ImagerySource(Protocol):
    """What the embedder needs from imagery."""

    name: str
    gsd: float
    size_px: int
    complete: bool
    """True when every pixel of every tile holds data (the world): a tile whose features are
    already stored then need not be read again to learn its share of valid pixels."""

    def check(self, region: BaseGeometry, zooms: list[int]) -> None:
        """Raise ValueError/FileNotFoundError when this source cannot serve ``region``."""

    def read(self, tiles: TileSet, out_size: int) -> np.ndarray:
        """Float32 (n, 3, out_size, out_size) in [0, 1] for the tiles."""

    def read_valid(self, tiles: TileSet, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The pixels of :meth:`read` and each tile's share of pixels that hold data, ``(n,)``."""


def open_source(spec: ImagerySpec) -> ImagerySource:
    """Build the source described by ``spec`` (opens files; raises clear errors)."""
    if spec.kind == "world":
        return WorldSource(spec)
    if spec.kind in ("geotiff", "folder"):
        return RasterSource(spec)
    raise ValueError(f"unknown imagery source {spec.kind!r}; expected one of {', '.join(SOURCE_KINDS)}")


# --------------------------------------------------------------------------- world


class WorldSource:
    """Tiles rendered by the synthetic world (``psm_model.world``), deterministic in its seed."""

    complete = True

    def __init__(self, spec: ImagerySpec) -> None:
        from psm_model.world.imagery import IMAGERY, ZOOM_MAX

        if spec.imagery not in IMAGERY:
            raise ValueError(f"unknown world imagery {spec.imagery!r}; expected one of {', '.join(IMAGERY)}")
        if int(spec.seed) != spec.seed or spec.seed < 0:
            raise ValueError(f"world seed must be a non-negative integer, got {spec.seed!r}")
        self.spec = spec
        self.gsd = float(spec.gsd if spec.gsd is not None else IMAGERY[spec.imagery].gsd)
        self.size_px = int(spec.size_px)
        self.zoom_max = ZOOM_MAX
        self.name = spec.name or f"world-{spec.seed}-{spec.imagery}"
        self._world: Any = None

    def check(self, region: BaseGeometry, zooms: list[int]) -> None:
        """The world renders any place; only zooms above its largest tile are refused."""
        bad = [z for z in zooms if z > self.zoom_max]
        if bad:
            raise ValueError(f"the world renderer supports zoom levels 1..{self.zoom_max}, got {bad}")

    def read(self, tiles: TileSet, out_size: int) -> np.ndarray:
        """Render each tile at the model's size directly (same footprint, fewer pixels)."""
        if self._world is None:
            from psm_model.world.world import World

            self._world = World(int(self.spec.seed))
        lat, lon = tiles.centroids()
        gsd_eff = self.gsd * self.size_px / out_size
        # one vectorised land-cover evaluation per batch: the same pixels as render_tile, about
        # twice as fast (rendering was most of a chunk's time in the demo's USA job)
        imgs = self._world.render_tiles(lat, lon, gsd=gsd_eff, size=out_size, zoom=int(tiles.spec.zoom),
                                        imagery=self.spec.imagery)
        return imgs.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)

    def read_valid(self, tiles: TileSet, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The rendered tiles; the renderer covers every place, so every pixel holds data."""
        return self.read(tiles, out_size), np.ones(len(tiles), dtype=np.float64)


# --------------------------------------------------------------------------- rasters


@dataclass
class _Raster:
    path: str
    crs: Any
    bounds_ll: tuple[float, float, float, float]
    res_m: float
    bands: list[int]
    dtype: str
    scales: tuple[float, ...]
    offsets: tuple[float, ...]

    @property
    def rescaled(self) -> bool:
        """Whether the file declares a scale or offset (values are then physical, e.g. reflectance)."""
        return any(s != 1.0 for s in self.scales) or any(o != 0.0 for o in self.offsets)


def _scale(arr: np.ndarray, raster: _Raster) -> np.ndarray:
    """Raw raster values to [0, 1].

    A file that declares a scale and offset per band (GDAL metadata) has them applied, and the
    physical values (reflectance) are clipped to [0, 1]. Otherwise uint8 is divided by 255,
    (u)int16 by 10000 (reflectance counts) and floats are taken as they are.
    """
    a = arr.astype(np.float32, copy=False)
    if raster.rescaled:
        a = a * np.asarray(raster.scales, np.float32)[:, None, None] + np.asarray(raster.offsets, np.float32)[:, None, None]
    elif raster.dtype == "uint8":
        a = a * (1.0 / 255.0)
    elif raster.dtype in ("uint16", "int16"):
        a = a * (1.0 / 10000.0)
    return np.clip(a, 0.0, 1.0, out=a)


def _unreadable(path: str, err: Exception) -> ValueError:
    return ValueError(f"cannot read the imagery file {path}: {err}. The file may be truncated or corrupt; "
                      "check it with `gdalinfo -checksum` or download it again")


class RasterSource:
    """A GeoTIFF/COG (local or remote), or a folder of georeferenced GeoTIFF tiles (first file wins)."""

    complete = False

    def __init__(self, spec: ImagerySpec) -> None:
        import rasterio
        from rasterio.errors import RasterioIOError
        from rasterio.warp import transform_bounds

        if not spec.path:
            raise ValueError(f"imagery source {spec.kind} needs a path (--imagery-path)")
        files: list[str]
        if spec.kind == "geotiff" and is_remote(spec.path):
            files = [spec.path]
            label = spec.path
        else:
            path = Path(spec.path).expanduser().resolve()
            label = str(path)
            if spec.kind == "geotiff":
                if not path.is_file():
                    raise FileNotFoundError(f"GeoTIFF {path} does not exist")
                files = [str(path)]
            else:
                if not path.is_dir():
                    raise FileNotFoundError(f"imagery folder {path} does not exist or is not a folder")
                files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
                if not files:
                    raise FileNotFoundError(f"imagery folder {path} holds no GeoTIFF tiles (*.tif, *.tiff)")
        self.spec = spec
        self.rasters: list[_Raster] = []
        for f in files:
            try:
                with rasterio.open(gdal_path(f)) as ds:
                    if ds.crs is None:
                        raise ValueError(
                            f"GeoTIFF {f} has no CRS (coordinate reference system), so its pixels cannot be "
                            "placed on the map; set one, e.g. `rio edit-info --crs EPSG:32631 FILE`"
                        )
                    if ds.count < 1:
                        raise ValueError(f"GeoTIFF {f} has no bands")
                    bands = list(spec.bands) if spec.bands else ([1, 2, 3] if ds.count >= 3 else [1])
                    if len(bands) == 1:
                        bands = bands * 3
                    if max(bands) > ds.count:
                        raise ValueError(f"GeoTIFF {f} has {ds.count} band(s); --bands asked for {spec.bands}")
                    bl = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
                    scales = tuple(float(ds.scales[b - 1] if ds.scales[b - 1] is not None else 1.0) for b in bands)
                    offsets = tuple(float(ds.offsets[b - 1] if ds.offsets[b - 1] is not None else 0.0) for b in bands)
                    self.rasters.append(_Raster(f, ds.crs, bl, _res_metres(ds), bands, ds.dtypes[bands[0] - 1],
                                                scales, offsets))
            except RasterioIOError as e:
                raise ValueError(f"cannot read {f} as a GeoTIFF: {e}") from e
        self.gsd = float(spec.gsd) if spec.gsd is not None else round(self.rasters[0].res_m, 3)
        if not self.gsd > 0:
            raise ValueError(f"gsd must be positive, got {self.gsd}")
        self.size_px = int(spec.size_px)
        self.name = spec.name or source_name(spec.kind, label)  # psm_db.rasters finds the file by this name

    def check(self, region: BaseGeometry, zooms: list[int]) -> None:
        """Refuse a region that no raster covers."""
        if not any(region.intersects(box(*r.bounds_ll)) for r in self.rasters):
            w, s, e, n = self.rasters[0].bounds_ll
            raise ValueError(
                f"the region {tuple(round(v, 4) for v in region.bounds)} does not overlap the imagery "
                f"(first file covers lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f})"
            )

    def read(self, tiles: TileSet, out_size: int) -> np.ndarray:
        """Read the chunk's window from each overlapping raster and reproject it per grid row."""
        return self.read_valid(tiles, out_size)[0]

    def read_valid(self, tiles: TileSet, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The tiles' pixels (0 where no data) and each tile's share of pixels that hold data.

        Nodata values, mask bands and alpha bands mark pixels without data, as does everything
        outside the rasters.

        Raises:
            ValueError: When a file cannot be read (truncated, corrupt, unreachable), naming it.
        """
        from rasterio.errors import RasterioError

        out = np.zeros((len(tiles), 3, out_size, out_size), dtype=np.float32)
        filled = np.zeros((len(tiles), out_size, out_size), dtype=bool)
        if len(tiles) == 0:
            return out, np.zeros(0)
        w, s, e, n = tiles.bounds()
        chunk_box = (float(w.min()), float(s.min()), float(e.max()), float(n.max()))
        for raster in self.rasters:
            if not box(*raster.bounds_ll).intersects(box(*chunk_box)):
                continue
            try:
                self._read_one(raster, tiles, out_size, chunk_box, out, filled)
            except RasterioError as err:
                raise _unreadable(raster.path, err) from err
        return out, filled.reshape(len(tiles), -1).mean(axis=1)

    def _read_one(
        self, raster: _Raster, tiles: TileSet, size: int, chunk_box: tuple[float, float, float, float],
        out: np.ndarray, filled: np.ndarray,
    ) -> None:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.transform import from_bounds
        from rasterio.warp import reproject, transform_bounds
        from rasterio.windows import Window
        from rasterio.windows import from_bounds as window_from_bounds

        with rasterio.open(gdal_path(raster.path)) as ds:
            sb = transform_bounds("EPSG:4326", ds.crs, *chunk_box, densify_pts=21)
            win = window_from_bounds(*sb, transform=ds.transform)
            col0 = max(0, math.floor(win.col_off) - 2)
            row0 = max(0, math.floor(win.row_off) - 2)
            col1 = min(ds.width, math.ceil(win.col_off + win.width) + 2)
            row1 = min(ds.height, math.ceil(win.row_off + win.height) + 2)
            if col1 <= col0 or row1 <= row0:
                return
            win = Window(col0, row0, col1 - col0, row1 - row0)
            # Decimate on read to about the output resolution (overviews are used if present).
            tile_m = tiles.spec.side_m / size
            factor = max(1.0, tile_m / max(raster.res_m, 1e-9) / 2.0)
            shape_h = max(1, int(math.ceil(win.height / factor)))
            shape_w = max(1, int(math.ceil(win.width / factor)))
            resampling = Resampling.average if factor > 1 else Resampling.nearest
            arr = ds.read(raster.bands, window=win, out_shape=(3, shape_h, shape_w), resampling=resampling,
                          masked=True)
            # a pixel holds data when every band read has data there (nodata, mask or alpha say not)
            valid: np.ndarray = np.asarray(~np.ma.getmaskarray(arr).any(axis=0), dtype=bool)
            data = _scale(np.ma.filled(arr, 0), raster)
            data[:, ~valid] = 0.0
            src_transform = ds.window_transform(win) @ rasterio.Affine.scale(win.width / shape_w,
                                                                              win.height / shape_h)
            src_crs = ds.crs
        inv = ~src_transform
        valid_u8: np.ndarray = np.asarray(valid, dtype=np.uint8)
        rows = tiles.rows
        for r in np.unique(rows):
            idx = np.flatnonzero(rows == r)
            cols = tiles.cols[idx]
            c0, c1 = int(cols.min()), int(cols.max())
            ncol = c1 - c0 + 1
            bw, bs, be, bn = tiles.spec.bounds(np.array([r, r]), np.array([c0, c1]))
            west, south, east, north = float(bw[0]), float(bs[0]), float(be[1]), float(bn[0])
            dst_transform = from_bounds(west, south, east, north, ncol * size, size)
            # Only the source pixels under this row of tiles go to GDAL.
            sx0, sy0, sx1, sy1 = transform_bounds("EPSG:4326", src_crs, west, south, east, north, densify_pts=5)
            xs, ys = zip(*(inv @ (x, y) for x in (sx0, sx1) for y in (sy0, sy1)), strict=True)
            px0, px1 = max(0, math.floor(min(xs)) - 2), min(data.shape[2], math.ceil(max(xs)) + 2)
            py0, py1 = max(0, math.floor(min(ys)) - 2), min(data.shape[1], math.ceil(max(ys)) + 2)
            if px1 <= px0 or py1 <= py0:
                continue
            sub_transform = src_transform @ rasterio.Affine.translation(px0, py0)
            dst = np.zeros((3, size, ncol * size), dtype=np.float32)
            reproject(np.ascontiguousarray(data[:, py0:py1, px0:px1]), dst, src_transform=sub_transform,
                      src_crs=src_crs, dst_transform=dst_transform, dst_crs="EPSG:4326",
                      resampling=Resampling.bilinear)
            mask = np.zeros((size, ncol * size), dtype=np.uint8)
            reproject(np.ascontiguousarray(valid_u8[py0:py1, px0:px1]), mask, src_transform=sub_transform,
                      src_crs=src_crs, dst_transform=dst_transform, dst_crs="EPSG:4326",
                      resampling=Resampling.nearest)
            for k, i in enumerate(idx):
                j = (int(cols[k]) - c0) * size
                tile = dst[:, :, j : j + size]
                m = (mask[:, j : j + size] > 0) & ~filled[i]
                out[i][:, m] = tile[:, m]
                filled[i] |= m


def _res_metres(ds: Any) -> float:
    """A raster's pixel size in metres (geographic CRSs are converted at the raster's centre)."""
    rx = abs(ds.transform.a)
    if ds.crs.is_geographic:
        lat = (ds.bounds.bottom + ds.bounds.top) / 2.0
        return rx * METRES_PER_DEGREE * max(0.01, math.cos(math.radians(lat)))
    try:
        factor = ds.crs.linear_units_factor[1]
    except Exception:  # noqa: BLE001 - units unknown: assume metres
        factor = 1.0
    return rx * factor


def grid_specs(source: ImagerySource, zooms: list[int]) -> list[GridSpec]:
    """One grid per zoom level for ``source``."""
    return [GridSpec(source.name, source.gsd, source.size_px, int(z)) for z in zooms]
