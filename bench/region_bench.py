"""Region ranking benchmark: psm.rank_regions_gaussian against an earlier version of itself.

Runs on a database that holds an embedded region set (``make demo`` leaves the ``demo`` set and
the USA at zoom 5). For every stored query of the model and every aggregate it times, side by
side in one run and in alternating order:

* ``function``: ``psm.rank_regions_gaussian`` as installed (what ``psm.rank_regions(query_id,
  ...)`` and the dashboard call);
* an earlier version, installed as a temporary function from the migration that replaced it
  (its downgrade text), chosen with ``--against``:
  * ``0011`` (the default): membership from psm.region_tiles, every member's row looked up
    through the primary key (restored by 0012's downgrade);
  * ``0008``: ``ST_Intersects(region, tile centroid)`` for every region and tile on every call,
    psm.match_probability called once per (region, tile) (restored by 0011's downgrade).

Both must return the same regions and scores (checked on every call pair).

    PSM_HOME=.psm .venv/bin/python bench/region_bench.py --set demo --zoom 5 --month 5 --hour 6 \\
        --audio-source aporee --repeats 30 [--against 0008]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from psm_db.settings import Settings  # noqa: E402

ARGS = ("(SELECT model_version FROM psm.queries WHERE id = %(qid)s), (SELECT mu FROM psm.queries WHERE id = %(qid)s),"
        " (SELECT var FROM psm.queries WHERE id = %(qid)s), %(set)s, %(month)s, %(hour)s, %(audio)s, %(caption)s,"
        " %(zoom)s, 100, %(agg)s")
FUNCTION = f"SELECT * FROM psm.rank_regions_gaussian({ARGS})"
EARLIER = f"SELECT * FROM pg_temp.rank_regions_earlier({ARGS})"
# version -> (the migration whose downgrade restores it, a phrase its text must hold)
VERSIONS = {"0011": ("0012_region_ranking_scan.py", "FROM psm.region_tiles m"),
            "0008": ("0011_region_membership.py", "ST_Intersects(r.geom, t.centroid)")}


def _earlier_function(version: str) -> str:
    """An earlier psm.rank_regions_gaussian, from the downgrade that restores it, as a temporary function."""
    migration, marker = VERSIONS[version]
    text = (ROOT / "psm_db/migrations/versions" / migration).read_text()
    old = text[text.index('DOWNGRADE = r"""') + len('DOWNGRADE = r"""'):]
    old = old[:old.index("COMMENT ON FUNCTION")]
    assert marker in old, f"{migration}'s downgrade no longer holds {marker!r}"
    return old.replace("psm.rank_regions_gaussian(", "pg_temp.rank_regions_earlier(")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="demo")
    p.add_argument("--zoom", type=int, default=5)
    p.add_argument("--month", type=int, default=5)
    p.add_argument("--hour", type=int, default=6)
    p.add_argument("--audio-source", default="aporee")
    p.add_argument("--caption-source", default=None)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--against", choices=sorted(VERSIONS), default="0011",
                   help="the earlier version to time beside the installed function")
    p.add_argument("--out", default=None, help="write the figures here as JSON")
    args = p.parse_args()

    url = Settings().db_url
    with psycopg.connect(url, autocommit=True) as c:
        cid = c.execute("SELECT psm.find_condition(%s, %s, %s, %s)",
                        (args.month, args.hour, args.audio_source, args.caption_source)).fetchone()[0]
        if cid is None:
            sys.exit("that condition was never embedded; pass the --month/--hour/--audio-source of the demo")
        qids = [r[0] for r in c.execute("SELECT id FROM psm.queries ORDER BY id")]
        if not qids:
            sys.exit("no stored queries: psm query embed --model VERSION --text '...' first")
        members = c.execute(
            "SELECT count(*), count(DISTINCT m.tile_id) FROM psm.region_tiles m JOIN psm.regions r"
            " ON r.id = m.region_id WHERE r.set_name = %s AND m.zoom = %s", (args.set, args.zoom)).fetchone()
        regions = c.execute("SELECT count(*) FROM psm.regions WHERE set_name = %s", (args.set,)).fetchone()[0]
        c.execute(_earlier_function(args.against))
        earlier = f"earlier ({args.against})"
        times: dict[str, dict[str, list[float]]] = {agg: {"function": [], earlier: []}
                                                   for agg in ("mean", "max", "share")}
        for agg in times:
            for i in range(args.repeats):
                params = {"qid": qids[i % len(qids)], "set": args.set, "zoom": args.zoom, "cid": cid,
                          "month": args.month, "hour": args.hour, "audio": args.audio_source,
                          "caption": args.caption_source, "agg": agg}
                order = [("function", FUNCTION), (earlier, EARLIER)]
                if i % 2:
                    order.reverse()
                rows = {}
                for name, sql in order:
                    t = time.perf_counter()
                    rows[name] = c.execute(sql, params).fetchall()
                    times[agg][name].append(time.perf_counter() - t)
                a, b = rows["function"], rows[earlier]
                assert [r[:2] for r in a] == [r[:2] for r in b] and all(
                    abs(x[2] - y[2]) < 1e-9 and x[3] == y[3] for x, y in zip(a, b, strict=True)), (agg, a, b)
    out = {
        "region_set": args.set, "regions": regions, "zoom": args.zoom, "memberships": members[0],
        "distinct_tiles": members[1], "repeats": args.repeats, "load_average_1m": round(os.getloadavg()[0], 2),
        "median_ms": {agg: {k: round(1000 * statistics.median(v), 1) for k, v in d.items()} for agg, d in times.items()},
    }
    for d in out["median_ms"].values():
        d["ratio"] = round(d[earlier] / d["function"], 2)
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
