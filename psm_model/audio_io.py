"""Reading audio files and resampling waveforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_AUDIO_SECONDS = 600.0
"""The longest query clip by default (10 minutes): a longer one takes minutes and gigabytes to encode."""
MIN_AUDIO_SECONDS = 0.5
"""The shortest query clip by default: below it the audio tower sees mostly padding, and the
clip gets the same sigma^2 as a long one (no less certain), so it is refused."""


def clock(seconds: float) -> str:
    """``seconds`` as m:ss (h:mm:ss from an hour), as the dashboard writes lengths."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def check_duration(frames: int, sample_rate: int, name: str, *, max_seconds: float | None = MAX_AUDIO_SECONDS,
                   min_seconds: float | None = MIN_AUDIO_SECONDS) -> float:
    """Return the clip's length in seconds, or raise ValueError when it is outside the limits.

    Args:
        frames: Samples per channel.
        sample_rate: In Hz.
        name: What the message calls the clip (a file name).
        max_seconds: The longest clip accepted (None: no limit).
        min_seconds: The shortest clip accepted (None: no limit).
    """
    seconds = frames / sample_rate if sample_rate else 0.0
    if max_seconds is not None and seconds > max_seconds:
        raise ValueError(
            f"{name} is {clock(seconds)} long ({seconds:.1f} s); the limit is {clock(max_seconds)} "
            f"({max_seconds:g} s, setting PSM_MAX_AUDIO_SECONDS). Trim it to the sound you are looking for."
        )
    if min_seconds is not None and seconds < min_seconds:
        raise ValueError(
            f"{name} is {seconds:.2f} s long; the shortest clip accepted is {min_seconds:g} s "
            "(setting PSM_MIN_AUDIO_SECONDS): a shorter one carries too little sound to encode. "
            "Give a longer clip."
        )
    return seconds


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


def load_audio(path: str | Path, *, max_seconds: float | None = None,
               min_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read WAV, FLAC, OGG or MP3 (via soundfile / libsndfile) as mono float32.

    Args:
        path: The audio file.
        max_seconds: Refuse a clip longer than this (None: no limit); the length is read from
            the header, so a long file is refused before it is decoded.
        min_seconds: Refuse a clip shorter than this (None: no limit).

    Returns:
        (samples, sample_rate): channels are averaged to mono.

    Raises:
        ValueError: If the file is missing, unreadable, corrupt, empty, outside the length limits
            or holds non-finite samples; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio file {path} does not exist")
    if max_seconds is not None or min_seconds is not None:
        try:
            info = sf.info(str(path))
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise ValueError(f"could not read audio file {path}: {e}") from e
        if info.frames > 0:
            check_duration(info.frames, info.samplerate, f"audio file {path}", max_seconds=max_seconds,
                           min_seconds=min_seconds)
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
