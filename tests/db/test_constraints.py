from __future__ import annotations

import numpy as np
import psycopg
import pytest

DIM = 4


@pytest.fixture
def tile_and_model(conn):
    conn.execute(
        "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim,"
        " match_a, match_b, checkpoint_path) VALUES ('abcdef0123456789', 't', 'tiny', 'pcmepp',"
        " %s, 8, 5, 5, '/nowhere') ON CONFLICT DO NOTHING", (DIM,))
    tile_id = conn.execute(
        "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid)"
        " VALUES ('test', 10, 32, 1, 0, 0, ST_MakeEnvelope(0, 0, 0.01, 0.01, 4326),"
        " ST_SetSRID(ST_MakePoint(0.005, 0.005), 4326)) RETURNING id").fetchone()[0]
    cond = conn.execute("INSERT INTO psm.conditions (month) VALUES (5) "
                        "ON CONFLICT ON CONSTRAINT conditions_key DO UPDATE SET month = 5 "
                        "RETURNING id").fetchone()[0]
    return tile_id, cond


def _insert(conn, tile_id, cond, mu, var, var_sum=None):
    mu = np.asarray(mu, dtype=np.float32)
    var = np.asarray(var, dtype=np.float32)
    conn.execute(
        "INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
        " VALUES ('abcdef0123456789', %s, %s, %s, %s, %s, %s)",
        (cond, tile_id, len(mu), mu, var, float(np.sum(var)) if var_sum is None else var_sum))


def test_valid_embedding_is_accepted(conn, tile_and_model):
    tile_id, cond = tile_and_model
    _insert(conn, tile_id, cond, [0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1])
    row = conn.execute("SELECT dim, var_sum FROM psm.embeddings WHERE tile_id = %s", (tile_id,)).fetchall()
    assert len(row) == 1 and row[0][0] == 4 and abs(row[0][1] - 0.4) < 1e-6


def test_nan_sigma_is_refused(conn, tile_and_model):
    with pytest.raises(psycopg.errors.DataException, match="NaN not allowed"):
        _insert(conn, *tile_and_model, [0.5] * 4, [0.1, float("nan"), 0.1, 0.1], var_sum=0.3)


def test_nan_var_sum_is_refused(conn, tile_and_model):
    with pytest.raises(psycopg.errors.CheckViolation, match="var_positive"):
        _insert(conn, *tile_and_model, [0.5] * 4, [0.1] * 4, var_sum=float("nan"))


@pytest.mark.parametrize("bad", [[0.1, -0.1, 0.1, 0.1], [0.1, 0.0, 0.1, 0.1]])
def test_non_positive_sigma_is_refused(conn, tile_and_model, bad):
    with pytest.raises(psycopg.errors.CheckViolation, match="var_positive"):
        _insert(conn, *tile_and_model, [0.5] * 4, bad, var_sum=1.0)


def test_wrong_dimension_is_refused(conn, tile_and_model):
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        _insert(conn, *tile_and_model, [0.5] * 3, [0.1] * 3)


def test_mu_and_var_dimensions_must_agree(conn, tile_and_model):
    tile_id, cond = tile_and_model
    with pytest.raises(psycopg.errors.CheckViolation, match="dims"):
        conn.execute(
            "INSERT INTO psm.embeddings (model_version, condition_id, tile_id, dim, mu, var, var_sum)"
            " VALUES ('abcdef0123456789', %s, %s, 4, '[1,0,0,0]', '[0.1,0.1,0.1]', 0.3)",
            (cond, tile_id))


def test_month_13_and_unknown_source_are_refused(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO psm.conditions (month) VALUES (13)")
    conn.rollback()
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO psm.conditions (audio_source) VALUES ('myspace')")


def test_condition_with_nulls_is_unique(conn):
    conn.execute("INSERT INTO psm.conditions (hour) VALUES (6) ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO psm.conditions (hour) VALUES (6) ON CONFLICT DO NOTHING")
    n = conn.execute("SELECT count(*) FROM psm.conditions WHERE hour = 6 AND month IS NULL"
                     " AND audio_source IS NULL AND caption_source IS NULL").fetchone()[0]
    assert n == 1


def test_self_intersecting_tile_is_refused(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO psm.tiles (imagery_source, gsd, size_px, zoom, grid_row, grid_col, geom, centroid)"
            " VALUES ('test', 10, 32, 1, 9, 9,"
            " ST_GeomFromText('POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))', 4326),"
            " ST_SetSRID(ST_MakePoint(0.5, 0.5), 4326))")
