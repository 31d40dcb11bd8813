"""psm_db.ranking's ad-hoc Gaussians (bound as parameters, reader role) agree with its stored-query rankings."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy.orm import Session

from psm_db import ranking
from psm_db.engine import make_engine
from psm_db.errors import NotEmbeddedError
from psm_model.condition import Condition

AT_20 = Condition(month=5, hour=20, audio_source="inaturalist")
AT_6 = Condition(month=5, hour=6, audio_source="inaturalist")


@pytest.fixture
def reader(dash_env):
    from psm_db.settings import get_settings

    engine = make_engine(get_settings().reader_url)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _gaussian(reader, seeded) -> ranking.Gaussian:
    return ranking.query_gaussian(session=reader, query_id=seeded.query_id)


def test_the_stored_query_gaussian_is_the_stored_query(reader, dash_env):
    g = _gaussian(reader, dash_env)
    assert g.model_version == dash_env.version and g.mu.dtype == g.var.dtype == np.float32
    with pytest.raises(ValueError, match="encoded by model"):
        ranking.query_gaussian(session=reader, query_id=dash_env.query_id, model_version=dash_env.other_version)


def test_adhoc_map_equals_stored_query_map(reader, dash_env):
    region = shapely.box(-91, 40, -89.5, 41)
    for condition in (AT_20, Condition()):
        mine = ranking.map_scores(session=reader, gaussian=_gaussian(reader, dash_env), region=region,
                                  condition=condition)
        ref = ranking.map_scores(session=reader, query_id=dash_env.query_id, region=region, condition=condition)
        assert len(ref) == 15 * 10
        for name in ("tile_id", "lon", "lat", "bounds", "distance", "probability", "var_sum"):
            assert np.array_equal(getattr(mine, name), getattr(ref, name)), name
        assert np.all(np.diff(ref.tile_id) > 0)


def test_map_distances_are_those_of_the_ranking(reader, dash_env):
    """The whole map and the SQL ranking add the query's sum sigma^2 up alike: the same CSD."""
    region = shapely.box(-91, 40, -88, 41)
    m = ranking.map_scores(session=reader, query_id=dash_env.query_id, region=region, condition=AT_20)
    top = ranking.rank_tiles(session=reader, query_id=dash_env.query_id, region=region, condition=AT_20,
                             k=25, method="exact")
    by_id = dict(zip(m.tile_id.tolist(), m.distance.tolist(), strict=True))
    assert [t.tile_id for t in top] == m.tile_id[np.lexsort((m.tile_id, m.distance))][:25].tolist()
    np.testing.assert_allclose([by_id[t.tile_id] for t in top], [t.distance for t in top], rtol=1e-12)


def test_range_scan_and_index_probe_agree(reader, dash_env, monkeypatch):
    g = _gaussian(reader, dash_env)
    region = shapely.box(-90.45, 40.25, -89.05, 40.75)
    by_range = ranking.map_scores(session=reader, gaussian=g, region=region)
    monkeypatch.setattr(ranking.maps, "RANGE_SLACK", 0)  # every region's ids look sparse ...
    by_runs = ranking.map_scores(session=reader, gaussian=g, region=region)  # ... and come in runs
    monkeypatch.setattr(ranking.maps, "MIN_RUN", 10**9)  # ... or none: one probe per id
    by_probe = ranking.map_scores(session=reader, gaussian=g, region=region)
    assert np.array_equal(by_range.tile_id, by_runs.tile_id)
    assert len(by_range) == 15 * 6  # centroids on the boundary count
    assert np.array_equal(by_range.tile_id, by_probe.tile_id)
    np.testing.assert_allclose(by_range.distance, by_probe.distance)


@pytest.mark.parametrize("region", [None, shapely.box(-90.45, 40.25, -88.05, 40.75)], ids=["everywhere", "box"])
@pytest.mark.parametrize("method", ["exact", "auto"])
def test_adhoc_tiles_equal_stored_query_tiles(reader, dash_env, region, method):
    for condition in (AT_6, AT_20, Condition()):
        mine = ranking.rank_tiles(session=reader, gaussian=_gaussian(reader, dash_env), region=region,
                                  condition=condition, k=30, method=method)
        ref = ranking.rank_tiles(session=reader, query_id=dash_env.query_id, region=region, condition=condition,
                                 k=30, method=method)
        assert len(ref) == 30 and mine == ref


@pytest.mark.parametrize("agg, threshold", [("mean", 0.5), ("max", 0.5), ("share", 0.5), ("share", 0.05)])
def test_adhoc_regions_equal_stored_query_regions_for_every_aggregate(reader, dash_env, agg, threshold):
    kw = dict(region_set="test-counties", condition=AT_6, agg=agg, threshold=threshold)
    mine = ranking.rank_regions(session=reader, gaussian=_gaussian(reader, dash_env), **kw)
    ref = ranking.rank_regions(session=reader, query_id=dash_env.query_id, **kw)
    assert len(ref) == 3 and mine == ref
    if agg == "mean":
        assert [r.name for r in ref] == ["Marsh", "City", "Farm"]
    # the aggregate over the whole map's scores of each region
    for r in ref:
        m = ranking.map_scores(session=reader, query_id=dash_env.query_id, region=f"test-counties/{r.name}",
                               condition=AT_6)
        p = m.probability
        want = {"mean": np.mean(p), "max": np.max(p), "share": np.mean(p >= threshold)}[agg]
        assert r.tile_count == len(m) and r.score == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_adhoc_and_stored_fail_alike(reader, dash_env):
    g = _gaussian(reader, dash_env)
    never = Condition(month=1, hour=1)
    for query in ({"gaussian": g}, {"query_id": dash_env.query_id}):
        with pytest.raises(NotEmbeddedError, match=r"never embedded.*psm embed-region"):
            ranking.map_scores(session=reader, **query, condition=never)
        with pytest.raises(NotEmbeddedError, match="never embedded"):
            ranking.rank_tiles(session=reader, **query, condition=never)
        with pytest.raises(NotEmbeddedError, match="never embedded"):
            ranking.rank_regions(session=reader, **query, region_set="test-counties", condition=never)
        with pytest.raises(NotEmbeddedError, match=r"in the region 0\.0000,0\.0000,1\.0000,1\.0000"):
            ranking.map_scores(session=reader, **query, region=shapely.box(0, 0, 1, 1))
        with pytest.raises(ValueError, match="zoom must be an integer >= 1"):
            ranking.map_scores(session=reader, **query, zoom=0)
    with pytest.raises(ValueError, match="dimensions"):
        ranking.map_scores(session=reader, gaussian=ranking.Gaussian(g.model_version, g.mu[:5], g.var[:5]))
    with pytest.raises(ValueError, match="dimensions"):
        ranking.rank_tiles(session=reader, gaussian=ranking.Gaussian(g.model_version, g.mu[:5], g.var[:5]))
    with pytest.raises(ValueError, match=r"must be > 0 in every dimension"):
        ranking.map_scores(session=reader, gaussian=ranking.Gaussian(g.model_version, g.mu, -g.var))
    with pytest.raises(ValueError, match="not both or neither"):
        ranking.map_scores(session=reader, gaussian=g, query_id=dash_env.query_id)
    with pytest.raises(ValueError, match="not both or neither"):
        ranking.rank_tiles(session=reader)
    with pytest.raises(ValueError, match=f"of model {g.model_version}, not of {dash_env.other_version}"):
        ranking.rank_regions(session=reader, gaussian=g, region_set="test-counties",
                             model_version=dash_env.other_version)
