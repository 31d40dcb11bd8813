"""Atomic writes: whole files only, and writers of the same file never share a temporary file."""

from __future__ import annotations

import numpy as np
import pytest

from psm_model.files import atomic_write


def test_two_writers_of_one_file_both_finish(tmp_path):
    # Two runs caching the same feature at once: each must write its own temporary file, so the
    # one that finishes second does not find its file moved away by the first.
    target = tmp_path / "feat.npy"
    with atomic_write(target, suffix=".npy") as first, atomic_write(target, suffix=".npy") as second:
        assert first != second
        np.save(first, np.arange(3))
        np.save(second, np.arange(5))
    assert np.load(target).tolist() == [0, 1, 2]  # the outer writer finished last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feat.npy"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "oracle.npz"
    np.savez(target, x=np.ones(2))
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target, suffix=".npz") as tmp:
        np.savez(tmp, x=np.zeros(2))
        raise RuntimeError("disk full")
    with np.load(target) as z:
        assert z["x"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oracle.npz"]


def test_numpy_keeps_the_temporary_name(tmp_path):
    # np.save appends .npy to a name without it; the suffix keeps the file it writes the one moved.
    target = tmp_path / "sub" / "a.npy"
    with atomic_write(target, suffix=".npy") as tmp:
        assert tmp.name.endswith(".npy") and tmp.parent == target.parent
        np.save(tmp, np.eye(2))
    assert np.load(target).shape == (2, 2)
    assert [p.name for p in target.parent.iterdir()] == ["a.npy"]


def test_the_file_gets_the_usual_permissions(tmp_path):
    # not mkstemp's owner-only 0600: a worker running as another user must be able to read a shard
    import os

    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(1))
    target = tmp_path / "atomic.npy"
    with atomic_write(target, suffix=".npy") as tmp:
        np.save(tmp, np.zeros(1))
    assert os.stat(target).st_mode & 0o777 == os.stat(plain).st_mode & 0o777
