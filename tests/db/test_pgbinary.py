"""psm_db.pgbinary against the real server: COPY BINARY rows in, array_send arrays out."""

from __future__ import annotations

import numpy as np
import pytest

from psm_db.pgbinary import copy_bytes, copy_payload, decode_array


def test_copy_rows_round_trip(conn):
    conn.execute("CREATE TEMP TABLE pgb (a int2, b int4, c int8, d float4, e float8, v vector, t text)")
    n = 5
    rng = np.random.default_rng(0)
    cols = [("int2", np.arange(n) - 2), ("int4", np.arange(n) * 1000), ("int8", np.arange(n) + 2**40),
            ("float4", rng.normal(size=n).astype(np.float32)), ("float8", rng.normal(size=n)),
            ("vector", rng.normal(size=(n, 3)).astype(np.float32)), ("bytes", b"same")]
    copy_bytes(conn, "COPY pgb FROM STDIN (FORMAT BINARY)", copy_payload(cols), block=7)
    rows = conn.execute("SELECT a, b, c, d, e, v::real[], t FROM pgb ORDER BY c").fetchall()
    assert [r[0] for r in rows] == list(range(-2, 3))
    assert [r[2] for r in rows] == [int(x) for x in np.arange(n) + 2**40]
    np.testing.assert_array_equal(np.array([r[3] for r in rows], dtype=np.float32), cols[3][1])
    np.testing.assert_array_equal([r[4] for r in rows], cols[4][1])
    np.testing.assert_array_equal(np.array([r[5] for r in rows], dtype=np.float32), cols[5][1])
    assert {r[6] for r in rows} == {"same"}
    conn.rollback()


def test_array_send_decodes(conn):
    f8, i8, f4, empty, null = conn.execute(
        "SELECT array_send(ARRAY[1.5, -2, 1e300]::float8[]), array_send(ARRAY[1, 2, 9007199254740993]::int8[]),"
        " array_send(ARRAY[0.5]::float4[]), array_send('{}'::float8[]), NULL::bytea").fetchone()
    np.testing.assert_array_equal(decode_array(f8, "f8"), [1.5, -2, 1e300])
    assert decode_array(i8, "i8").tolist() == [1, 2, 9007199254740993] and decode_array(i8, "i8").dtype == np.int64
    assert decode_array(f4, "f4").tolist() == [0.5]
    assert decode_array(empty).shape == (0,) and decode_array(null, "i8").dtype == np.int64
    with_null, two_d = conn.execute("SELECT array_send(ARRAY[1, NULL]::float8[]),"
                                    " array_send(ARRAY[[1, 2], [3, 4]]::float8[])").fetchone()
    with pytest.raises(ValueError, match="NULL"):
        decode_array(with_null)
    with pytest.raises(ValueError, match="1-D"):
        decode_array(two_d)
    conn.rollback()


def test_unknown_column_type_is_refused():
    with pytest.raises(ValueError, match="no COPY encoding for column type 'uuid'"):
        copy_payload([("uuid", [1])])
