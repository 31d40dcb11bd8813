"""Reading audio files (WAV, FLAC, OGG, MP3) and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from psm_model.audio_io import load_audio, resample


@pytest.mark.parametrize(
    ("ext", "fmt", "subtype"),
    [
        ("wav", "WAV", "PCM_16"),
        ("flac", "FLAC", "PCM_16"),
        ("ogg", "OGG", "VORBIS"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
    ],
)
def test_load_formats(tmp_path, ext, fmt, subtype):
    sr = 22_050
    t = np.arange(sr // 2) / sr
    stereo = np.stack(
        [0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1
    )
    path = tmp_path / f"tone.{ext}"
    sf.write(str(path), stereo, sr, format=fmt, subtype=subtype)
    wave, rate = load_audio(path)
    assert rate == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - len(t)) < 2500  # lossy codecs pad a little
    assert 0.2 < np.abs(wave).max() < 0.7


def test_corrupt_and_empty_files(tmp_path):
    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(ValueError, match="broken.wav"):
        load_audio(corrupt)
    empty = tmp_path / "empty.flac"
    sf.write(str(empty), np.zeros((0, 1)), 16_000, format="FLAC")
    with pytest.raises(ValueError, match="empty.flac"):
        load_audio(empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_audio(tmp_path / "missing.mp3")


def test_resample():
    sr = 48_000
    wave = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    out = resample(wave, sr, 16_000)
    assert out.dtype == np.float32 and abs(len(out) - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(spectrum.argmax()) - 1000) <= 1  # 1 kHz stays at 1 kHz
    with pytest.raises(ValueError, match="sample_rate must be an integer"):
        resample(wave, -5, 16_000)
    with pytest.raises(ValueError, match="empty"):
        resample(np.zeros(0, np.float32), sr, 16_000)
