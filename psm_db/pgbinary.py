"""PostgreSQL's binary formats, one implementation each: COPY BINARY rows and ``array_send`` arrays.

* :func:`copy_tuples` / :func:`copy_payload` encode numpy columns as COPY BINARY tuples in one
  structured-array write (no per-row Python work); :func:`copy_bytes` streams a payload.
* :func:`decode_array` decodes ``array_send(array_agg(...))`` output (a 1-D array without
  NULLs) straight into numpy; :func:`array_send_row` selects such arrays for the columns of a
  subquery, so 100k rows come back as a few byte strings instead of 100k row objects.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import LargeBinary, func, select
from sqlalchemy.orm import Session

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
"""Signature, flags (no OIDs) and an empty header extension."""
COPY_TRAILER = struct.pack(">h", -1)

SCALAR_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8"}
"""Fixed-width PostgreSQL types and their big-endian numpy codes."""

Column = tuple[str, Any]
"""(type, values): a key of SCALAR_TYPES with n values; ``vector`` with (n, d) values (pgvector's
binary form: int16 dim, int16 unused, d float32); or ``bytes`` with one byte string for every row."""


def _fields(i: int, kind: str, values: Any) -> list[Any]:
    if kind in SCALAR_TYPES:
        return [(f"c{i}_len", ">i4"), (f"c{i}", SCALAR_TYPES[kind])]
    if kind == "vector":
        dim = int(np.shape(values)[1])
        return [(f"c{i}_len", ">i4"), (f"c{i}_dim", ">i2"), (f"c{i}_unused", ">i2"), (f"c{i}", ">f4", (dim,))]
    if kind == "bytes":
        return [(f"c{i}_len", ">i4"), (f"c{i}", f"S{len(values)}")]
    raise ValueError(f"no COPY encoding for column type {kind!r}; use one of "
                     f"{', '.join([*SCALAR_TYPES, 'vector', 'bytes'])}")


def copy_tuples(columns: Sequence[Column], n: int | None = None) -> bytes:
    """COPY BINARY tuples (no header or trailer) of ``n`` rows from columns of numpy values.

    Scalars broadcast, so a constant column can be given as one value. ``n`` defaults to the
    length of the first array column.
    """
    if n is None:
        n = next(len(v) for k, v in columns if k != "bytes" and np.ndim(v) > 0)
    dtype = np.dtype([("nfields", ">i2")] + [f for i, (k, v) in enumerate(columns) for f in _fields(i, k, v)])
    rows = np.empty(n, dtype=dtype)
    rows["nfields"] = len(columns)
    for i, (kind, values) in enumerate(columns):
        if kind == "vector":
            dim = int(np.shape(values)[1])
            rows[f"c{i}_len"] = 4 + 4 * dim
            rows[f"c{i}_dim"] = dim
            rows[f"c{i}_unused"] = 0
        elif kind == "bytes":
            rows[f"c{i}_len"] = len(values)
        else:
            rows[f"c{i}_len"] = np.dtype(SCALAR_TYPES[kind]).itemsize
        rows[f"c{i}"] = values
    return rows.tobytes()


def copy_payload(columns: Sequence[Column], n: int | None = None) -> bytes:
    """A whole COPY BINARY stream: header, :func:`copy_tuples`, trailer."""
    return COPY_HEADER + copy_tuples(columns, n) + COPY_TRAILER


def copy_bytes(conn: psycopg.Connection, sql: str, payload: bytes, block: int = 1 << 20) -> None:
    """Stream an already-encoded COPY BINARY payload with ``sql`` (a COPY ... FROM STDIN)."""
    view = memoryview(payload)
    with conn.cursor() as cur, cur.copy(sql) as copy:
        for start in range(0, len(view), block):
            copy.write(view[start : start + block])


def decode_array(payload: bytes | memoryview | None, kind: str = "f8") -> np.ndarray:
    """Decode ``array_send`` output of a 1-D array without NULLs into numpy.

    Args:
        payload: The bytes (None, as ``array_send(NULL)`` gives, decodes to an empty array).
        kind: ``f8`` (float8), ``i8`` (int8), ``f4`` or ``i4``.

    Returns:
        float64 for ``f8``/``f4``, int64 for ``i8``/``i4``.

    Raises:
        ValueError: On a multi-dimensional array or one with NULL elements.
    """
    out_type = np.float64 if kind.startswith("f") else np.int64
    if payload is None:
        return np.empty(0, dtype=out_type)
    payload = bytes(payload)
    ndim = int.from_bytes(payload[0:4], "big")
    if ndim == 0:
        return np.empty(0, dtype=out_type)
    if ndim != 1:
        raise ValueError(f"decode_array reads 1-D arrays, got {ndim} dimensions")
    if int.from_bytes(payload[4:8], "big") != 0:  # the has-NULLs flag
        raise ValueError("decode_array cannot read arrays with NULL elements")
    n = int.from_bytes(payload[12:16], "big")
    body = np.frombuffer(payload, dtype=np.dtype([("len", ">i4"), ("v", ">" + kind)]), count=n, offset=20)
    return body["v"].astype(out_type)


def array_send_row(session: Session, sub: Any, columns: Sequence[str]) -> tuple[Any, ...]:
    """One row of ``array_send(array_agg(column))`` for the named columns of a subquery."""
    return tuple(session.execute(select(*(
        func.array_send(func.array_agg(sub.c[name]), type_=LargeBinary) for name in columns))).one())


__all__ = [
    "COPY_HEADER", "COPY_TRAILER", "SCALAR_TYPES", "Column", "array_send_row", "copy_bytes", "copy_payload",
    "copy_tuples", "decode_array",
]
