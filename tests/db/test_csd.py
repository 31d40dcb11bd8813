from __future__ import annotations

import numpy as np
import psycopg
import pytest


def _numpy_csd(mu_p, var_p, mu_q, var_q) -> float:
    mu_p, var_p, mu_q, var_q = (np.asarray(x, dtype=np.float64) for x in (mu_p, var_p, mu_q, var_q))
    return float(np.sum((mu_p - mu_q) ** 2) + np.sum(np.abs(var_p + var_q)))


@pytest.mark.parametrize("dim", [1, 3, 32, 128, 512, 1024])
def test_csd_matches_numpy(conn, dim):
    rng = np.random.default_rng(dim)
    for _ in range(20):
        mu_p = rng.normal(size=dim).astype(np.float32)
        mu_q = rng.normal(size=dim).astype(np.float32)
        mu_p /= np.linalg.norm(mu_p)
        mu_q /= np.linalg.norm(mu_q)
        var_p = np.exp(rng.normal(-4, 1, size=dim)).astype(np.float32)
        var_q = np.exp(rng.normal(-4, 1, size=dim)).astype(np.float32)
        got = conn.execute("SELECT psm.csd(%s, %s, %s, %s)", (mu_p, var_p, mu_q, var_q)).fetchone()[0]
        want = _numpy_csd(mu_p, var_p, mu_q, var_q)
        assert abs(got - want) <= 1e-5 * abs(want), (got, want)


def test_csd_of_identical_points_is_the_variance_mass(conn):
    mu = np.array([0.6, 0.8], dtype=np.float32)
    var = np.array([0.25, 0.5], dtype=np.float32)
    got = conn.execute("SELECT psm.csd(%s, %s, %s, %s)", (mu, var, mu, var)).fetchone()[0]
    assert got == pytest.approx(1.5, rel=1e-6)


def test_csd_is_strict(conn):
    assert conn.execute("SELECT psm.csd(NULL, '[1]', '[1]', '[1]')").fetchone()[0] is None


def test_csd_refuses_mismatched_dimensions(conn):
    with pytest.raises(psycopg.errors.DataException, match="different vector dimensions"):
        conn.execute("SELECT psm.csd('[1,2,3]', '[1,1,1]', '[1,2]', '[1,1]')")


@pytest.mark.parametrize("var_p, var_q, which", [
    ("[-0.5,1]", "[1,1]", "var_p"),   # returned ||mu_p - mu_q||^2 + 1.5 before 0009
    ("[1,1]", "[1,-20]", "var_q"),    # returned a large positive, meaningless distance
    ("[0,1]", "[1,1]", "var_p"),      # sigma^2 = 0 is refused too, as psm.embeddings refuses it
])
def test_csd_refuses_sigma2_that_is_not_positive(conn, var_p, var_q, which):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"sigma\\^2 > 0; {which} holds"):
        conn.execute("SELECT psm.csd('[0,0]', %s, '[3,4]', %s)", (var_p, var_q))


def test_match_probability_is_a_sigmoid(conn):
    got = conn.execute("SELECT psm.match_probability(1.0, 5.0, 5.0), "
                       "psm.match_probability(1e6, 5.0, 5.0)").fetchone()
    assert got[0] == pytest.approx(0.5)
    assert 0.0 <= got[1] < 1e-100


def test_match_probability_is_inlined_into_the_query_and_stays_null_for_null(conn):
    """A per-row function call doubled the cost of ranking; inlined, the plan holds the expression."""
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN VERBOSE SELECT psm.match_probability(e.var_sum, 5.0, 5.0) FROM psm.embeddings e"))
    assert "match_probability" not in plan and "exp(" in plan, plan
    got = conn.execute("SELECT psm.match_probability(NULL, 5.0, 5.0), psm.match_probability(-1e6, 5.0, 5.0)").fetchone()
    assert got[0] is None and got[1] == 1.0
