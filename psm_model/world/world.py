"""The World: one seeded synthetic planet with land cover, imagery, a soundscape law and a sampler."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from psm_model.metadata import (
    AUDIO_SOURCES,
    CAPTION_SOURCES,
    audio_source_index,
    check_hour,
    check_latlon,
    check_month,
)
from psm_model.world import imagery as _imagery
from psm_model.world.captions import make_caption
from psm_model.world.landcover import LANDCOVER_CLASSES, N_LANDCOVER, LandCoverField, fractions
from psm_model.world.law import HOUR_PRIOR, MONTH_PRIOR, SOURCE_PRIOR, law
from psm_model.world.oracle import set_prob_matrix
from psm_model.world.sampler import draw_metadata, draw_places, draw_set
from psm_model.world.sounds import SOUND_CLASSES, mix_clip


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the world itself (not of a dataset drawn from it)."""

    seed: int = 0
    hear_side_m: float = 600.0
    """Side of the square "hearing footprint" whose land-cover mix sets the soundscape law."""
    hear_grid: int = 12
    """The footprint's land cover is sampled on a hear_grid x hear_grid grid of points."""
    zoom_max: int = _imagery.ZOOM_MAX


def _class_indices(classes: Iterable[str | int]) -> tuple[int, ...]:
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in SOUND_CLASSES:
                raise ValueError(
                    f"unknown sound class {c!r}; expected one of {', '.join(SOUND_CLASSES)}"
                )
            out.append(SOUND_CLASSES.index(c))
        else:
            out.append(int(c))
    return tuple(sorted(set(out)))


def _options(
    value: int | None, n: int, prior: np.ndarray, base: int = 0
) -> list[tuple[int, float]]:
    """(value, weight) pairs: the value itself, or every value weighted by the sampler's prior."""
    if value is None:
        return [(k + base, float(prior[k])) for k in range(n)]
    return [(int(value), 1.0)]


class World:
    """A seeded synthetic world.

    The soundscape law uses the land-cover mix of a fixed hearing footprint (``hear_side_m``
    square, default 600 m) around the recording place, whatever imagery is used. Map helpers
    (:meth:`class_probs_grid`) may instead use a tile's own footprint (``gsd * size * zoom``),
    so the "true map" can depend on zoom through the footprint; pass ``gsd=None`` for the law's
    own footprint.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        hear_side_m: float = WorldConfig.hear_side_m,
        hear_grid: int = WorldConfig.hear_grid,
        zoom_max: int = WorldConfig.zoom_max,
    ) -> None:
        if not hear_side_m > 0 or int(hear_grid) < 1 or int(zoom_max) < 1:
            raise ValueError(
                f"need hear_side_m > 0, hear_grid >= 1 and zoom_max >= 1, got {hear_side_m}, {hear_grid}, {zoom_max}"
            )
        self.config = WorldConfig(int(seed), float(hear_side_m), int(hear_grid), int(zoom_max))
        self.field = LandCoverField(self.config.seed)

    @property
    def seed(self) -> int:
        """The world's seed."""
        return self.config.seed

    def to_dict(self) -> dict:
        """JSON-able description of the world (config and vocabularies)."""
        return {
            **asdict(self.config),
            "sound_classes": list(SOUND_CLASSES),
            "landcover_classes": list(LANDCOVER_CLASSES),
            "audio_sources": list(AUDIO_SOURCES),
            "caption_sources": list(CAPTION_SOURCES),
        }

    # ----------------------------------------------------------------- land cover
    def _footprint(self, gsd: float | None, size: int | None, zoom: int) -> tuple[float, int]:
        if gsd is None:
            return self.config.hear_side_m, self.config.hear_grid
        if size is None:
            raise ValueError("pass size together with gsd to use a tile footprint")
        return float(gsd) * int(size) * int(zoom), self.config.hear_grid

    def landcover_fractions(
        self,
        lat: float,
        lon: float,
        gsd: float | None = None,
        size: int | None = None,
        zoom: int = 1,
    ) -> np.ndarray:
        """Land-cover fractions ``[len(LANDCOVER_CLASSES)]`` under a footprint.

        With ``gsd=None`` the footprint is the law's hearing footprint; else it is the tile's
        ``gsd * size * zoom`` metres square.
        """
        lat, lon = check_latlon(lat, lon)
        side, n = self._footprint(gsd, size, zoom)
        return fractions(self.field, np.array([lat]), np.array([lon]), side, n)[0]

    def landcover_fractions_grid(
        self,
        lats: np.ndarray,
        lons: np.ndarray,
        gsd: float | None = None,
        size: int | None = None,
        zoom: int = 1,
    ) -> np.ndarray:
        """Vectorised :meth:`landcover_fractions`: ``[N, len(LANDCOVER_CLASSES)]``."""
        side, n = self._footprint(gsd, size, zoom)
        lats = np.asarray(lats, dtype=np.float64).ravel()
        lons = np.asarray(lons, dtype=np.float64).ravel()
        out = np.empty((lats.shape[0], N_LANDCOVER))
        step = max(1, 200_000 // (n * n))
        for a in range(0, lats.shape[0], step):
            out[a : a + step] = fractions(
                self.field, lats[a : a + step], lons[a : a + step], side, n
            )
        return out

    # ----------------------------------------------------------------- the law
    @staticmethod
    def probs_from_fractions(
        fr: np.ndarray,
        lat: np.ndarray,
        month: int | None,
        hour: int | None,
        audio_source: str | None,
    ) -> np.ndarray:
        """Class probabilities ``[N, n_sounds]``; None metadata is averaged over the sampler's priors."""
        check_month(month)
        check_hour(hour)
        src = audio_source_index(audio_source)
        fr = np.atleast_2d(fr)
        out = np.zeros((fr.shape[0], len(SOUND_CLASSES)))
        for (m, wm), (h, wh), (s, ws) in itertools.product(
            _options(month, 12, MONTH_PRIOR, 1),
            _options(hour, 24, HOUR_PRIOR),
            _options(src, 4, SOURCE_PRIOR),
        ):
            out += wm * wh * ws * law(fr, lat, m, h, s)
        return out

    def class_probs(
        self, lat: float, lon: float, month: int | None, hour: int | None, audio_source: str | None
    ) -> np.ndarray:
        """The true distribution over SOUND_CLASSES at a place and time, for an audio source.

        Unknown (None) month, hour or source is averaged over the sampler's distribution of it.
        """
        fr = self.landcover_fractions(lat, lon)
        return self.probs_from_fractions(fr[None], np.array([lat]), month, hour, audio_source)[0]

    def class_probs_grid(
        self,
        lats: np.ndarray,
        lons: np.ndarray,
        month: int | None,
        hour: int | None,
        audio_source: str | None,
        gsd: float | None = None,
        size: int | None = None,
        zoom: int = 1,
    ) -> np.ndarray:
        """Class probabilities ``[N, n_sounds]`` for many tiles, for one metadata setting (for maps)."""
        lats = np.asarray(lats, dtype=np.float64).ravel()
        fr = self.landcover_fractions_grid(lats, lons, gsd, size, zoom)
        return self.probs_from_fractions(fr, lats, month, hour, audio_source)

    def set_prob(
        self,
        classes: frozenset | tuple,
        lat: float,
        lon: float,
        month: int | None,
        hour: int | None,
        audio_source: str | None,
    ) -> float:
        """Exact probability that the sampler draws exactly this set of classes here and now.

        ``classes`` holds class names or indices. None metadata is marginalised over the
        sampler's distribution of it (the set probability is averaged, not the class probs).
        """
        cls = _class_indices(classes)
        fr = self.landcover_fractions(lat, lon)[None]
        return float(
            set_prob_matrix(fr, np.array([lat]), [month], [hour], [audio_source], [cls])[0, 0]
        )

    # ----------------------------------------------------------------- imagery
    def render_tile(
        self,
        lat: float,
        lon: float,
        gsd: float = 10.0,
        size: int = 48,
        zoom: int = 1,
        imagery: str = "sentinel",
    ) -> np.ndarray:
        """A satellite-like RGB tile, uint8 ``[size, size, 3]``.

        Zoom l is the centre l*size pixels of the (zoom_max*size)-pixel tile at ``gsd``, resized
        to size, so zooms of one place are consistent crops. Deterministic in
        (seed, lat, lon, gsd, size, zoom, imagery).
        """
        lat, lon = check_latlon(lat, lon)
        kind = _imagery.check_imagery(imagery)
        return _imagery.render_zooms(
            self.field, lat, lon, kind, size, (int(zoom),), gsd, self.config.zoom_max
        )[0]

    def render_zooms(
        self,
        lat: float,
        lon: float,
        zooms: tuple[int, ...] = (1, 3, 5),
        size: int = 48,
        imagery: str = "sentinel",
        gsd: float | None = None,
    ) -> np.ndarray:
        """Tiles at several zooms from one render: uint8 ``[len(zooms), size, size, 3]``."""
        lat, lon = check_latlon(lat, lon)
        kind = _imagery.check_imagery(imagery)
        return _imagery.render_zooms(
            self.field, lat, lon, kind, size, tuple(zooms), gsd, self.config.zoom_max
        )

    def render_tiles(
        self,
        lats: np.ndarray,
        lons: np.ndarray,
        gsd: float = 10.0,
        size: int = 48,
        zoom: int = 1,
        imagery: str = "sentinel",
        batch: int = 256,
    ) -> np.ndarray:
        """Many tiles at once, uint8 ``[N, size, size, 3]``; the same pixels as :meth:`render_tile`.

        The land-cover field is evaluated for a whole batch of tiles in one vectorised call,
        which makes region jobs (thousands of tiles) several times faster than a loop.
        """
        kind = _imagery.check_imagery(imagery)
        lats = np.asarray(lats, dtype=np.float64).ravel()
        lons = np.asarray(lons, dtype=np.float64).ravel()
        if lats.shape != lons.shape:
            raise ValueError(
                f"lats and lons must have the same length, got {lats.shape[0]} and {lons.shape[0]}"
            )
        out = np.empty((lats.shape[0], size, size, 3), dtype=np.uint8)
        zmax = self.config.zoom_max
        big = zmax * size
        c0 = (big - zoom * size) // 2
        for a in range(0, lats.shape[0], batch):
            la, lo = lats[a : a + batch], lons[a : a + batch]
            for x, y in zip(la, lo, strict=True):
                check_latlon(float(x), float(y))
            grids = [
                _imagery.coarse_grid(float(x), float(y), gsd, big, c0, c0 + zoom * size)
                for x, y in zip(la, lo, strict=True)
            ]
            scores, oj = self.field.evaluate(
                np.stack([g[1] for g in grids]), np.stack([g[2] for g in grids])
            )
            for r in range(la.shape[0]):
                out[a + r] = _imagery.render_zooms(
                    self.field,
                    float(la[r]),
                    float(lo[r]),
                    kind,
                    size,
                    (int(zoom),),
                    gsd,
                    zmax,
                    (grids[r][0], scores[r], oj[r]),
                )[0]
        return out

    # ----------------------------------------------------------------- samples
    def draw_plan(self, n: int) -> dict[str, np.ndarray]:
        """Places and metadata of n samples (cheap, vectorised); same seed, same plan."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        rng = np.random.default_rng([self.seed, 0x5EED])
        meta = draw_metadata(n, rng)
        lat, lon = draw_places(n, meta["source"], rng)
        return {"lat": lat, "lon": lon, **meta}

    def sample_rng(self, index: int) -> np.random.Generator:
        """The generator for sample ``index`` (its classes, caption and audio)."""
        return np.random.default_rng([self.seed, 0xA0D10, int(index)])

    def realise(
        self,
        index: int,
        lat: float,
        probs: np.ndarray,
        fr: np.ndarray,
        month: int,
        hour: int,
        source: int,
        caption_source: int,
        sample_rate: int,
        clip_seconds: float,
        caption_context: bool = False,
        named: dict[str, bool] | None = None,
    ) -> tuple[tuple[int, ...], str, np.ndarray]:
        """Draw a sample's classes from the law, caption it and synthesise its clip (float32).

        ``caption_context`` and ``named`` are passed to :func:`make_caption`.
        """
        rng = self.sample_rng(index)
        cls = draw_set(probs, rng)
        names = tuple(SOUND_CLASSES[c] for c in cls)
        land = LANDCOVER_CLASSES[int(np.argmax(fr))]
        cap = make_caption(
            names, land, month, hour, AUDIO_SOURCES[source], CAPTION_SOURCES[caption_source], rng,
            context=caption_context, named=named,
        )
        audio = mix_clip(names, rng, sample_rate, clip_seconds)
        return cls, cap, audio
