"""Reading audio files and resampling waveforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000


def check_sample_rate(sample_rate: int) -> int:
    """Return ``sample_rate`` as int, or raise ValueError if it is not a plausible rate in Hz."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer | float):
        raise ValueError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    if int(sample_rate) != sample_rate or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate must be an integer in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {sample_rate!r}"
        )
    return int(sample_rate)


def check_waveform(wave: np.ndarray, name: str = "waveform") -> np.ndarray:
    """Return a finite, non-empty, 1-D float32 copy of ``wave``, or raise ValueError."""
    arr = np.asarray(wave)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (mono samples), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return arr


def resample(wave: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality); returns float32.

    Raises:
        ValueError: On a bad rate or waveform.
    """
    wave = check_waveform(wave)
    sample_rate, target_rate = check_sample_rate(sample_rate), check_sample_rate(target_rate)
    if sample_rate == target_rate:
        return wave
    out = soxr.resample(wave, sample_rate, target_rate, quality="HQ").astype(np.float32)
    if out.size == 0:
        raise ValueError(
            f"waveform of {wave.size} samples is too short to resample {sample_rate} -> {target_rate} Hz"
        )
    return out


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read WAV, FLAC, OGG or MP3 (via soundfile / libsndfile) as mono float32.

    Args:
        path: The audio file.

    Returns:
        (samples, sample_rate): channels are averaged to mono.

    Raises:
        ValueError: If the file is missing, unreadable, corrupt, empty or holds non-finite samples;
            the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio file {path} does not exist")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise ValueError(f"could not read audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise ValueError(f"audio file {path} contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)
