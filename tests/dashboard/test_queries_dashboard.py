"""psm_db.ranking's ad-hoc Gaussians (bound as parameters, reader role) agree with its stored-query rankings."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy.orm import Session

from psm_db import catalog, ranking
from psm_db.engine import make_engine
from psm_db.errors import NotEmbeddedError


@pytest.fixture
def reader(dash_env):
    from psm_db.settings import get_settings

    engine = make_engine(get_settings().reader_url)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _stored(reader, seeded):
    return catalog.stored_query_gaussian(seeded.query_id, session=reader)


def test_vector_map_equals_stored_query_map(reader, dash_env):
    mu, var = _stored(reader, dash_env)
    region = shapely.box(-91, 40, -89.5, 41)
    kw = dict(month=5, hour=20, audio_source="inaturalist", caption_source=None, zoom=1)
    mine = ranking.map_scores_vector(dash_env.version, mu, var, region, session=reader, **kw)
    ref = ranking.map_scores(session=reader, query_id=dash_env.query_id, region=region, **kw)
    order = np.argsort(ref.tile_id)
    assert np.array_equal(mine["tile_id"], ref.tile_id[order])
    np.testing.assert_allclose(mine["distance"], ref.distance[order], rtol=1e-5)
    np.testing.assert_allclose(mine["probability"], ref.probability[order], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(mine["xmin"], ref.bounds[order, 0])


def test_range_scan_and_join_agree(reader, dash_env):
    mu, var = _stored(reader, dash_env)
    region = shapely.box(-90.45, 40.25, -89.05, 40.75)
    kw = dict(month=None, hour=None, audio_source=None, caption_source=None, zoom=1)
    tiles = ranking.region_tiles(region, 1, session=reader)
    by_join = ranking.condition_scores(dash_env.version, mu, var, region, session=reader, **kw)
    by_range = ranking.condition_scores(dash_env.version, mu, var, region, tile_ids=tiles["tile_id"], session=reader, **kw)
    a, b = np.argsort(by_join["tile_id"]), np.argsort(by_range["tile_id"])
    assert len(a) == len(tiles["tile_id"]) == 15 * 6  # centroids on the boundary count
    assert np.array_equal(by_join["tile_id"][a], by_range["tile_id"][b])
    np.testing.assert_allclose(by_join["distance"][a], by_range["distance"][b])


def test_rank_regions_vector_matches_rank_regions(reader, dash_env):
    mu, var = _stored(reader, dash_env)
    kw = dict(month=5, hour=6, audio_source="inaturalist", caption_source=None, zoom=1)
    mine = ranking.rank_regions_vector(dash_env.version, mu, var, "test-counties", session=reader, **kw)
    ref = ranking.rank_regions(session=reader, query_id=dash_env.query_id, region_set="test-counties", **kw)
    assert [r["name"] for r in mine] == [r.name for r in ref] == ["Marsh", "City", "Farm"]
    np.testing.assert_allclose([r["score"] for r in mine], [r.score for r in ref], rtol=1e-4)


def test_not_embedded_and_bad_dimension(reader, dash_env):
    mu, var = _stored(reader, dash_env)
    with pytest.raises(NotEmbeddedError, match="never embedded"):
        ranking.condition_scores(dash_env.version, mu, var, None, month=1, hour=1, audio_source=None,
                            caption_source=None, zoom=1, session=reader)
    with pytest.raises(NotEmbeddedError, match="in this region"):
        ranking.condition_scores(dash_env.version, mu, var, shapely.box(0, 0, 1, 1), month=None, hour=None,
                            audio_source=None, caption_source=None, zoom=1, session=reader)
    with pytest.raises(ValueError, match="dimensions"):
        ranking.condition_scores(dash_env.version, mu[:5], var[:5], None, month=None, hour=None, audio_source=None,
                            caption_source=None, zoom=1, session=reader)
