from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")


@pytest.fixture(scope="module")
def tiny_model(db_url, tmp_path_factory):
    from psm_db.engine import connection
    from psm_db.registry import register_model
    from psm_model import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(create_model("tiny"), path)
    with connection(db_url) as conn:
        version = register_model(conn, path)
    return version


@pytest.fixture
def cli(db_url, monkeypatch):
    from typer.testing import CliRunner

    from psm_db.settings import get_settings
    from worker.cli.query import app as query_app

    monkeypatch.setenv("PSM_DATABASE_URL", db_url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(query_app, list(args))
    get_settings.cache_clear()


def _stored(db_url, qid):
    from psm_db.engine import connect

    with connect(db_url) as conn:
        row = conn.execute("SELECT kind, text, audio_name, dim, mu, var, var_sum, model_version "
                           "FROM psm.queries WHERE id = %s", (qid,)).fetchone()
    vec = [np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v) for v in row[4:6]]
    return (*row[:4], *vec, *row[6:])


def _tone(rate, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_embed_text_stores_the_models_gaussian(cli, tiny_model, db_url):
    import torch

    from psm_model import load_checkpoint

    out = cli("embed", "--model", tiny_model.version, "--text", "a rooster at dawn", "--name", "rooster")
    assert out.exit_code == 0, out.output
    kind, text, audio, dim, mu, var, var_sum, version = _stored(db_url, int(out.output.strip()))
    assert (kind, text, audio, dim, version) == ("text", "a rooster at dawn", None, tiny_model.embed_dim,
                                                 tiny_model.version)
    model, _ = load_checkpoint(tiny_model.checkpoint_path)
    with torch.no_grad():
        want_mu, want_logvar = model.encode_text(["a rooster at dawn"])
    np.testing.assert_allclose(mu, want_mu.numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, np.exp(want_logvar.numpy()[0]), rtol=1e-5)
    assert np.linalg.norm(mu) == pytest.approx(1.0, abs=1e-5)
    assert var_sum == pytest.approx(float(np.sum(var, dtype=np.float64)), rel=1e-6)


@pytest.mark.parametrize("fmt, rate", [("WAV", 22050), ("FLAC", 44100), ("OGG", 16000), ("MP3", 48000)])
def test_embed_audio_any_format_and_rate(cli, tiny_model, db_url, tmp_path, fmt, rate):
    path = tmp_path / f"clip.{fmt.lower()}"
    try:
        sf.write(str(path), _tone(rate), rate, format=fmt)
    except Exception as e:  # libsndfile built without this codec
        pytest.skip(f"soundfile cannot write {fmt}: {e}")
    out = cli("embed", "--model", tiny_model.version[:8], "--audio", str(path))
    assert out.exit_code == 0, out.output
    kind, _, audio, dim, mu, var, _, _ = _stored(db_url, int(out.output.strip()))
    assert (kind, audio, dim) == ("audio", path.name, tiny_model.embed_dim)
    assert np.all(var > 0) and np.linalg.norm(mu) == pytest.approx(1.0, abs=1e-5)


def test_embed_audio_with_text_composes(cli, tiny_model, db_url, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(str(path), _tone(32000), 32000)
    out = cli("embed", "--model", tiny_model.version, "--audio", str(path), "--text", "birds")
    assert out.exit_code == 0, out.output
    kind, text, audio, *_ = _stored(db_url, int(out.output.strip()))
    assert (kind, text, audio) == ("audio+text", "birds", "clip.wav")


def test_embed_refuses_bad_audio_and_arguments(cli, tiny_model, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 3)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    cases = [
        (("--audio", str(corrupt)), "could not read audio file"),
        (("--audio", str(empty)), "holds no samples"),
        (("--audio", str(tmp_path / "missing.mp3")), "does not exist"),
        ((), "give --text, --audio, or both"),
        (("--text", "   "), "the query text is empty"),
    ]
    for args, message in cases:
        out = cli("embed", "--model", tiny_model.version, *args)
        assert out.exit_code == 1, out.output
        assert message in out.output
    out = cli("embed", "--model", "deadbeefdeadbeef", "--text", "x")
    assert out.exit_code == 1 and "unknown model version" in out.output


def test_hostile_text_is_stored_verbatim(cli, tiny_model, db_url):
    evil = "'); DROP TABLE psm.queries; -- %s {0} $$"
    out = cli("embed", "--model", tiny_model.version, "--text", evil, "--name", evil)
    assert out.exit_code == 0, out.output
    assert _stored(db_url, int(out.output.strip()))[1] == evil
