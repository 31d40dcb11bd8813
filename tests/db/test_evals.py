"""store_eval: evaluation runs and metric rows in psm.eval_runs / psm.eval_metrics."""

from __future__ import annotations

import pytest

VERSION = "e0a1b2c3d4e5f607"


def _records(n_rows: int = 2) -> dict:
    rows = [
        {"scorer": "model", "direction": "i2a", "zoom": 1, "with_text": False, "metadata": "all",
         "r_at_10": 0.42, "median_rank": 120.5, "n": 1000},
        {"scorer": "oracle", "direction": "a2i", "zoom": 1, "with_text": False, "metadata": "none",
         "r_at_10": 0.61, "median_rank": 60.0, "n": 1000},
    ][:n_rows]
    return {"run": {"model_version": VERSION, "dataset": "/data/world", "split": "test",
                    "config": {"ties": "random"}, "results": {"rows": n_rows}}, "metrics": rows}


@pytest.fixture
def registered(conn):
    conn.execute(
        "INSERT INTO psm.model_versions (version, name, preset, loss, embed_dim, feature_dim, match_a, match_b,"
        " checkpoint_path) VALUES (%s, 'e', 'tiny', 'pcmepp', 4, 8, 5, 5, '/nowhere') ON CONFLICT DO NOTHING",
        (VERSION,))
    return VERSION


def test_store_eval_writes_the_run_and_every_metric_row(db, conn, registered):
    from psm_db.evals import store_eval

    run_id = store_eval(db, registered, {"records": _records()})
    run = conn.execute("SELECT model_version, dataset, split, config FROM psm.eval_runs WHERE id = %s",
                       (run_id,)).fetchone()
    assert run == (VERSION, "/data/world", "test", {"ties": "random"})
    rows = conn.execute("SELECT scorer, direction, zoom, with_text, metadata, r_at_10, median_rank, n "
                        "FROM psm.eval_metrics WHERE run_id = %s ORDER BY scorer", (run_id,)).fetchall()
    assert rows == [("model", "i2a", 1, False, "all", 0.42, 120.5, 1000),
                    ("oracle", "a2i", 1, False, "none", 0.61, 60.0, 1000)]


def test_store_eval_rejects_unknown_versions_and_bad_rows(db, conn, registered):
    from psm_db.evals import store_eval

    with pytest.raises(LookupError, match="not registered"):
        store_eval(db, "ffffffffffffffff", _records())
    bad = _records()
    bad["metrics"].append(dict(bad["metrics"][0]))
    with pytest.raises(ValueError, match="twice"):
        store_eval(db, registered, bad)
    with pytest.raises(ValueError, match="metrics"):
        store_eval(db, registered, {"run": {}, "metrics": []})


def test_store_eval_keeps_text_oracle_rows_and_the_all_but_caption_source_label(db, conn, registered):
    from psm_db.evals import store_eval

    records = _records(0)
    records["metrics"] = [
        {"scorer": s, "direction": "a2i", "zoom": 1, "with_text": t, "metadata": "all-caption_source",
         "r_at_10": r, "median_rank": 10.0, "n": 1000}
        for s, t, r in (("model", True, 0.3), ("oracle", False, 0.5), ("oracle", True, 0.74))
    ]
    run_id = store_eval(db, registered, records)
    rows = conn.execute("SELECT scorer, with_text, metadata, r_at_10 FROM psm.eval_metrics WHERE run_id = %s "
                        "ORDER BY scorer, with_text", (run_id,)).fetchall()
    assert rows == [("model", True, "all-caption_source", 0.3), ("oracle", False, "all-caption_source", 0.5),
                    ("oracle", True, "all-caption_source", 0.74)]
