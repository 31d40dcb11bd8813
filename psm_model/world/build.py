"""Build a world dataset on disk: shards of images and audio, a Parquet index and world.json."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from psm_model.files import atomic_write
from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES
from psm_model.world.imagery import IMAGERY, check_imagery, coarse_grid, render_zooms
from psm_model.world.landcover import LANDCOVER_CLASSES
from psm_model.world.law import law
from psm_model.world.sounds import CLASS_QUERIES, SOUND_CLASSES
from psm_model.world.split import SPLITS, assign_splits, cell_ids
from psm_model.world.world import World

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.parquet"
META_FILE = "world.json"
SHARD_DIR = "shards"


@dataclass
class BuildConfig:
    """What to build: the world seed, sample count, imagery, audio and split settings."""

    seed: int = 0
    samples: int = 20_000
    image_size: int = 48
    imagery: str = "sentinel"
    gsd: float | None = None
    """Metres per pixel at zoom 1; None uses the imagery kind's GSD (10 m sentinel, 0.6 m highres)."""
    zooms: tuple[int, ...] = (1, 3, 5)
    sample_rate: int = 16_000
    clip_seconds: float = 4.0
    cell_deg: float | None = 1.0
    cell_km: float | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shard_size: int = 1000
    workers: int = 2
    caption_context: bool = False
    """Captions may also name the month, time of day and a source tag (metadata the image side is
    given too; see :func:`psm_model.world.captions.make_caption`)."""

    def validate(self) -> None:
        """Raise ValueError for settings that cannot build."""
        check_imagery(self.imagery)
        if self.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {self.samples}")
        if self.image_size < 4:
            raise ValueError(f"--image-size must be >= 4 pixels, got {self.image_size}")
        if (
            not self.zooms
            or any(z < 1 or z > 5 for z in self.zooms)
            or len(set(self.zooms)) != len(self.zooms)
        ):
            raise ValueError(f"zooms must be distinct integers in 1..5, got {self.zooms}")
        if self.sample_rate < 4000 or self.clip_seconds <= 0:
            raise ValueError(
                f"need --sample-rate >= 4000 and --clip-seconds > 0, got {self.sample_rate}, {self.clip_seconds}"
            )
        if self.cell_km is not None:
            self.cell_deg = None
        if self.cell_deg is None and self.cell_km is None:
            raise ValueError("give --cell-deg or --cell-km for the spatial split")
        if self.shard_size < 1 or self.workers < 1:
            raise ValueError(
                f"--shard-size and --workers must be >= 1, got {self.shard_size}, {self.workers}"
            )

    @property
    def effective_gsd(self) -> float:
        """GSD actually used at zoom 1."""
        return float(self.gsd) if self.gsd is not None else IMAGERY[self.imagery].gsd


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz with fixed timestamps, so the same arrays give the same bytes."""
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


_STATE: dict = {}


def _init_worker(seed: int, cfg: BuildConfig, plan: dict[str, np.ndarray]) -> None:
    _STATE["world"] = World(seed)
    _STATE["cfg"] = cfg
    _STATE["plan"] = plan


def _coarse_batch(
    world: World, lat: np.ndarray, lon: np.ndarray, cfg: BuildConfig
) -> tuple[int, np.ndarray, np.ndarray]:
    """Coarse land-cover scores of every tile in a shard, in one vectorised call."""
    big = world.config.zoom_max * cfg.image_size
    n = max(cfg.zooms) * cfg.image_size
    c0 = (big - n) // 2
    grids = [
        coarse_grid(float(a), float(b), cfg.effective_gsd, big, c0, c0 + n)
        for a, b in zip(lat, lon, strict=True)
    ]
    k0 = grids[0][0]
    scores, oj = world.field.evaluate(
        np.stack([g[1] for g in grids]), np.stack([g[2] for g in grids])
    )
    return k0, scores, oj


def _make_shard(rows: np.ndarray) -> dict:
    """Realise the samples ``rows`` (indices into the plan): probabilities, classes, captions, audio, images."""
    world: World = _STATE["world"]
    cfg: BuildConfig = _STATE["cfg"]
    plan = _STATE["plan"]
    lat, lon = plan["lat"][rows], plan["lon"][rows]
    fr = world.landcover_fractions_grid(lat, lon)
    probs = law(fr, lat, plan["month"][rows], plan["hour"][rows], plan["source"][rows])
    n_t = int(round(cfg.sample_rate * cfg.clip_seconds))
    audio = np.empty((rows.size, n_t), dtype=np.int16)
    images = np.empty(
        (rows.size, len(cfg.zooms), cfg.image_size, cfg.image_size, 3), dtype=np.uint8
    )
    classes, captions, named_what = [], [], []
    kind = IMAGERY[cfg.imagery]
    coarse = _coarse_batch(world, lat, lon, cfg)
    for r, i in enumerate(rows):
        named: dict[str, bool] = {}
        cls, cap, wav = world.realise(
            int(i),
            float(lat[r]),
            probs[r],
            fr[r],
            int(plan["month"][i]),
            int(plan["hour"][i]),
            int(plan["source"][i]),
            int(plan["caption_source"][i]),
            cfg.sample_rate,
            cfg.clip_seconds,
            caption_context=cfg.caption_context,
            named=named,
        )
        audio[r] = np.round(wav * 32767.0).astype(np.int16)
        images[r] = render_zooms(
            world.field,
            float(lat[r]),
            float(lon[r]),
            kind,
            cfg.image_size,
            cfg.zooms,
            cfg.effective_gsd,
            world.config.zoom_max,
            (coarse[0], coarse[1][r], coarse[2][r]),
        )
        classes.append(cls)
        captions.append(cap)
        named_what.append([k for k, v in named.items() if v])
    return {
        "rows": rows,
        "fractions": fr,
        "probs": probs,
        "classes": classes,
        "captions": captions,
        "caption_named": named_what,
        "audio": audio,
        "images": images,
    }


def build_world(
    out: str | os.PathLike,
    cfg: BuildConfig,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Build the dataset under ``out`` and return the world.json contents.

    Deterministic: the same config gives the same bytes, whatever the number of workers.
    ``progress`` is called with the number of samples finished after each shard.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"output folder {out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = World(cfg.seed)
    plan = world.draw_plan(cfg.samples)
    cells = cell_ids(plan["lat"], plan["lon"], cfg.cell_deg, cfg.cell_km)
    split = assign_splits(cells, cfg.seed, cfg.split_fractions)
    jobs: list[tuple[str, int, np.ndarray]] = []
    for s in SPLITS:
        idx = np.nonzero(split == s)[0]
        for k, a in enumerate(range(0, idx.size, cfg.shard_size)):
            jobs.append((s, k, idx[a : a + cfg.shard_size]))

    n = cfg.samples
    cols: dict[str, list] = {
        c: [None] * n for c in ("shard", "row", "classes", "caption", "caption_named", "probs", "fractions")
    }
    done = 0

    def consume(job: tuple[str, int, np.ndarray], res: dict) -> None:
        nonlocal done
        s, k, _ = job
        name = f"{s}-{k:05d}.npz"
        write_npz(
            out / SHARD_DIR / name,
            {"index": res["rows"].astype(np.int64), "images": res["images"], "audio": res["audio"]},
        )
        for r, i in enumerate(res["rows"]):
            cols["shard"][i] = f"{SHARD_DIR}/{name}"
            cols["row"][i] = r
            cols["classes"][i] = [SOUND_CLASSES[c] for c in res["classes"][r]]
            cols["caption"][i] = res["captions"][r]
            cols["caption_named"][i] = res["caption_named"][r]
            cols["probs"][i] = res["probs"][r].astype(np.float32)
            cols["fractions"][i] = res["fractions"][r].astype(np.float32)
        done += len(res["rows"])
        if progress is not None:
            progress(done)

    workers = min(cfg.workers, max(len(jobs), 1))
    if workers > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg.seed, cfg, plan)) as pool:
            for job, res in zip(jobs, pool.imap(_make_shard, [j[2] for j in jobs]), strict=True):
                consume(job, res)
    else:
        _init_worker(cfg.seed, cfg, plan)
        for job in jobs:
            consume(job, _make_shard(job[2]))

    keys = [f"w{cfg.seed}-{i:07d}" for i in range(n)]
    table = pa.table(
        {
            "key": keys,
            "index": np.arange(n, dtype=np.int64),
            "lat": plan["lat"],
            "lon": plan["lon"],
            "month": plan["month"].astype(np.int8),
            "hour": plan["hour"].astype(np.int8),
            "audio_source": [AUDIO_SOURCES[s] for s in plan["source"]],
            "caption_source": [CAPTION_SOURCES[s] for s in plan["caption_source"]],
            "caption": cols["caption"],
            "caption_named": pa.array(cols["caption_named"], type=pa.list_(pa.string())),
            "classes": cols["classes"],
            "landcover": [LANDCOVER_CLASSES[int(np.argmax(f))] for f in cols["fractions"]],
            "split": list(split),
            "cell": cells,
            "shard": cols["shard"],
            "row": np.array(cols["row"], dtype=np.int32),
            "probs": pa.array([p.tolist() for p in cols["probs"]], type=pa.list_(pa.float32())),
            "fractions": pa.array(
                [f.tolist() for f in cols["fractions"]], type=pa.list_(pa.float32())
            ),
        }
    )
    pq.write_table(table, out / INDEX_FILE)
    counts = {s: int((split == s).sum()) for s in SPLITS}
    meta = {
        "format_version": FORMAT_VERSION,
        "world": world.to_dict(),
        # Settings that shape the data (not the worker count: any count gives the same bytes).
        "build": {
            **{k: v for k, v in asdict(cfg).items() if k != "workers"},
            "gsd": cfg.effective_gsd,
            "zooms": list(cfg.zooms),
        },
        "class_queries": CLASS_QUERIES,
        "counts": counts,
        "shards": {
            s: sorted(f"{SHARD_DIR}/{j[0]}-{j[1]:05d}.npz" for j in jobs if j[0] == s)
            for s in SPLITS
        },
        "index": INDEX_FILE,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    logger.info(
        "built %d samples in %.1f s under %s (%s)", n, time.perf_counter() - t0, out, counts
    )
    return meta
