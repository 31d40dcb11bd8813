"""Synthetic sound classes with distinct time-frequency signatures, and the clip mixer."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import signal

SOUND_CLASSES: tuple[str, ...] = (
    "birdsong",
    "insects",
    "frogs",
    "rooster",
    "sheep",
    "dog",
    "car_horn",
    "traffic",
    "siren",
    "crowd",
    "church_bells",
    "ocean_waves",
    "rain",
    "wind",
    "construction",
)
"""Canonical sound class names, in index order."""

N_SOUNDS = len(SOUND_CLASSES)

CLASS_QUERIES: dict[str, str] = {
    "birdsong": "sound of birds chirping",
    "insects": "sound of insects",
    "frogs": "sound of frogs croaking",
    "rooster": "sound of a rooster crowing",
    "sheep": "sound of sheep on a farm",
    "dog": "sound of a dog barking",
    "car_horn": "sound of a car horn",
    "traffic": "sound of traffic",
    "siren": "sound of a siren",
    "crowd": "sound of a crowd of people talking",
    "church_bells": "sound of church bells",
    "ocean_waves": "sound of ocean waves",
    "rain": "sound of rain",
    "wind": "sound of wind",
    "construction": "sound of construction work",
}
"""A short text per class, for map queries."""


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


@functools.lru_cache(maxsize=4096)
def _butter(lo: float | None, hi: float | None, sr: int, order: int) -> np.ndarray | None:
    nyq = sr / 2.0
    if lo is not None and hi is not None and hi >= nyq * 0.98:
        hi = None
    if lo is not None and hi is not None:
        return signal.butter(order, [lo / nyq, hi / nyq], btype="band", output="sos")
    if lo is not None:
        return signal.butter(order, lo / nyq, btype="high", output="sos")
    if hi is not None:
        return signal.butter(order, min(hi / nyq, 0.98), btype="low", output="sos")
    return None


def _q(f: float | None) -> float | None:
    """Quantise a cutoff to 1/16 octave so filter designs can be cached."""
    return None if f is None else float(2.0 ** (round(np.log2(f) * 16) / 16))


def _band(x: np.ndarray, lo: float | None, hi: float | None, sr: int, order: int = 2) -> np.ndarray:
    sos = _butter(_q(lo), _q(hi), int(sr), int(order))
    return x if sos is None else signal.sosfilt(sos, x)


def _tone(f: np.ndarray, sr: int, harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Harmonic tone following an instantaneous frequency track f (Hz, per sample)."""
    ph = 2 * np.pi * np.cumsum(f) / sr
    out = np.zeros_like(f)
    for h, g in enumerate(harmonics, start=1):
        ok = f * h < sr / 2
        out += g * np.sin(h * ph) * ok
    return out


def _add(out: np.ndarray, start: int, seg: np.ndarray) -> None:
    """Add an event segment into ``out`` at ``start``, clipped to the clip."""
    n = out.shape[0]
    s0, s1 = max(start, 0), min(start + seg.shape[0], n)
    if s1 > s0:
        out[s0:s1] += seg[s0 - start : s1 - start]


def _shape(length: int, attack: float, release: float) -> np.ndarray:
    """Attack/sustain/release envelope of ``length`` samples."""
    length = max(int(length), 4)
    e = np.ones(length)
    a = max(int(length * attack), 1)
    r = max(int(length * release), 1)
    e[:a] = np.linspace(0, 1, a)
    e[-r:] = np.minimum(e[-r:], np.linspace(1, 0, r))
    return e


def birdsong(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Fast frequency-modulated chirps and trills at 2-7 kHz."""
    out = np.zeros(n)
    base = rng.uniform(2500, 4500)
    pos = rng.uniform(0, 0.3) * sr
    while pos < n:
        length = max(int(rng.uniform(0.04, 0.18) * sr), 4)
        f0 = base * rng.uniform(0.8, 1.3)
        sweep = rng.uniform(-0.5, 0.5) * f0
        tt = np.arange(length) / length
        f = f0 + sweep * tt + 0.08 * f0 * np.sin(2 * np.pi * rng.uniform(20, 60) * tt * length / sr)
        _add(
            out,
            int(pos),
            _shape(length, 0.2, 0.5) * _tone(np.minimum(f, 0.45 * sr), sr, (1.0, 0.2)),
        )
        pos += length + rng.uniform(0.03, 0.5) * sr
    return out


def insects(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Steady high-pitched stridulation: a 4-7 kHz carrier pulsed at 20-60 Hz in chirp groups."""
    t = _t(n, sr)
    fc = min(rng.uniform(4000, 7000), 0.4 * sr)
    pulse = 0.5 * (1 + np.sign(np.sin(2 * np.pi * rng.uniform(20, 60) * t)))
    group = 0.5 * (1 + np.sign(np.sin(2 * np.pi * rng.uniform(0.8, 3.0) * t + rng.uniform(0, 6))))
    if rng.random() < 0.4:
        group = np.ones(n)  # continuous buzz (cicada-like)
    carrier = np.sin(2 * np.pi * fc * t) + 0.3 * _band(
        rng.standard_normal(n), fc * 0.9, fc * 1.1, sr
    )
    return carrier * _band(pulse * group, None, 400.0, sr, 1)


def frogs(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Low, buzzy croaks (200-700 Hz with harmonics), repeated at 1-3 per second by 1-3 frogs."""
    out = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        f0 = rng.uniform(200, 700)
        rate = rng.uniform(1.0, 3.0)
        length = max(int(rng.uniform(0.08, 0.25) * sr), 4)
        tt = np.arange(length) / sr
        am = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(40, 90) * tt))
        croak = _shape(length, 0.1, 0.4) * am * _tone(np.full(length, f0), sr, (1.0, 0.6, 0.4, 0.2))
        pos = rng.uniform(0, 1 / rate) * sr
        while pos < n:
            _add(out, int(pos), croak * rng.uniform(0.7, 1.0))
            pos += sr / rate * rng.uniform(0.8, 1.2)
    return out


def rooster(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Cock-a-doodle-doo: 4 harmonic syllables of rising then falling pitch, about 1.5 s."""
    out = np.zeros(n)
    f0 = rng.uniform(450, 700)
    pos = int(rng.uniform(0, max(n / sr - 1.5, 0.05)) * sr)
    for c, d in zip((1.0, 1.15, 1.35, 1.1), (0.15, 0.15, 0.6, 0.4), strict=True):
        length = max(int(d * rng.uniform(0.8, 1.2) * sr), 4)
        f = f0 * c * (1 + 0.02 * np.sin(2 * np.pi * 6 * np.arange(length) / sr))
        _add(out, pos, _shape(length, 0.15, 0.3) * _tone(f, sr, (1.0, 0.7, 0.5, 0.35, 0.2)))
        pos += length + int(0.03 * sr)
    return out


def sheep(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Baa: 200-350 Hz harmonic bleats with strong 6-9 Hz tremolo."""
    out = np.zeros(n)
    pos = rng.uniform(0, 0.8) * sr
    while pos < n:
        f0 = rng.uniform(200, 350)
        length = max(int(rng.uniform(0.5, 1.0) * sr), 4)
        tt = np.arange(length) / sr
        trem = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(6, 9) * tt)
        voice = _tone(np.full(length, f0), sr, (0.4, 0.9, 0.9, 0.7, 0.5, 0.3, 0.2))
        _add(out, int(pos), _shape(length, 0.15, 0.4) * trem * voice)
        pos += length + rng.uniform(0.4, 2.0) * sr
    return _band(out, 250, 3000, sr)


def dog(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Barks: short harsh harmonic bursts with noise, in groups of 1-4."""
    out = np.zeros(n)
    f0 = rng.uniform(350, 900)
    pos = rng.uniform(0, 0.5) * sr
    while pos < n:
        for _ in range(rng.integers(1, 5)):
            length = max(int(rng.uniform(0.08, 0.18) * sr), 4)
            f = np.full(length, f0 * rng.uniform(0.9, 1.1))
            burst = _tone(f, sr, (1.0, 0.8, 0.6, 0.5, 0.4)) + 0.5 * rng.standard_normal(length)
            _add(out, int(pos), _shape(length, 0.05, 0.6) * burst)
            pos += length + rng.uniform(0.1, 0.25) * sr
        pos += rng.uniform(0.5, 1.5) * sr
    return _band(out, 200, 4000, sr)


def car_horn(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Steady two-tone square-ish honks (350-550 Hz), 1-3 per clip."""
    out = np.zeros(n)
    f1 = rng.uniform(350, 450)
    f2 = f1 * rng.uniform(1.2, 1.3)
    t = _t(n, sr)
    sq = np.tanh(4 * np.sin(2 * np.pi * f1 * t)) + np.tanh(4 * np.sin(2 * np.pi * f2 * t))
    for _ in range(rng.integers(1, 4)):
        length = int(rng.uniform(0.25, 1.2) * sr)
        _add(out, int(rng.uniform(0, max(n - length, 1))), _shape(length, 0.02, 0.05))
    return _band(sq * np.minimum(out, 1.0), 250, 4000, sr)


def traffic(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Low broadband rumble with passing-vehicle swells."""
    rumble = _band(
        np.cumsum(rng.standard_normal(n)) * 0.05 + rng.standard_normal(n) * 0.3, 40, 1500, sr
    )
    swell = np.full(n, 0.4)
    for _ in range(rng.integers(2, 6)):
        c = rng.uniform(0, n / sr)
        w = rng.uniform(0.4, 1.5)
        swell += np.exp(-(((_t(n, sr) - c) / w) ** 2))
    engine = 0.2 * _tone(np.full(n, rng.uniform(60, 120)), sr, (1.0, 0.5, 0.3))
    return (rumble + engine) * swell


def siren(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Emergency siren: a wailing sweep (600-1500 Hz) or a hi-lo alternation."""
    t = _t(n, sr)
    lo, hi = rng.uniform(550, 750), rng.uniform(1100, 1500)
    if rng.random() < 0.6:
        lfo = 0.5 * (1 - np.cos(2 * np.pi * t / rng.uniform(1.5, 4.0)))
    else:
        lfo = (np.sin(2 * np.pi * t / rng.uniform(0.8, 1.4)) > 0).astype(float)
    return _tone(lo + (hi - lo) * lfo, sr, (1.0, 0.3, 0.15))


def _slow(values: np.ndarray, n: int) -> np.ndarray:
    """Upsample a control signal computed every 64 samples to n samples (sample-and-hold)."""
    return np.repeat(values, 64)[:n]


def crowd(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Speech babble: several glottal-like (sawtooth) voices, gated at syllable rates, band-limited."""
    out = np.zeros(n)
    tc = np.arange((n + 63) // 64) * 64 / sr  # control-rate time
    for _ in range(rng.integers(3, 6)):
        f0 = rng.uniform(100, 250)
        f = _slow(f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * tc)), n)
        saw = 2.0 * np.mod(np.cumsum(f) / sr, 1.0) - 1.0
        syll = _slow(
            np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * tc + rng.uniform(0, 6)), 0, None), n
        )
        out += saw * syll * rng.uniform(0.3, 1.0)
    return _band(out + 0.3 * rng.standard_normal(n) * out.std(), 250, 3500, sr)


def church_bells(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Bell strikes: inharmonic partials with long exponential decays, every 1-2 s."""
    out = np.zeros(n)
    f0 = rng.uniform(250, 600)
    partials = (
        (0.5, 0.6),
        (1.0, 1.0),
        (1.19, 0.7),
        (1.5, 0.5),
        (2.0, 0.6),
        (2.52, 0.3),
        (3.01, 0.2),
    )
    period = rng.uniform(1.0, 2.0)
    dt = np.arange(int(min(2.0, n / sr) * sr)) / sr
    strikes: dict[float, np.ndarray] = {}
    pos = rng.uniform(0, 0.5)
    while pos < n / sr:
        f = f0 * float(rng.choice([1.0, 1.0, 1.12, 0.89]))
        if f not in strikes:
            strikes[f] = sum(
                g * np.exp(-dt * (1.2 + r)) * np.sin(2 * np.pi * f * r * dt)
                for r, g in partials
                if f * r < sr / 2
            )
        _add(out, int(pos * sr), strikes[f])
        pos += period
    return out


def ocean_waves(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Surf: broadband noise swelling and breaking every 3-8 s."""
    t = _t(n, sr)
    period = rng.uniform(3, 8)
    phase = np.mod(t / period + rng.uniform(0, 1), 1.0)
    env = 0.25 + np.where(phase < 0.3, phase / 0.3, np.exp(-(phase - 0.3) * 4.0))
    return _band(rng.standard_normal(n), 100, 5000, sr) * env


def rain(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Rain: steady high-passed hiss plus dense random drop clicks."""
    hiss = _band(rng.standard_normal(n), 1500, None, sr)
    drops = np.zeros(n)
    k = int(rng.uniform(50, 300) * n / sr)
    idx = rng.integers(0, n, k)
    drops[idx] = rng.uniform(0.5, 3.0, k) * rng.choice([-1.0, 1.0], k)
    drops = _band(drops, 2000, 7000, sr)
    return hiss * rng.uniform(0.3, 0.8) + drops


def wind(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Wind: low-passed noise with slow gusts and a faint whistle."""
    t = _t(n, sr)
    gust = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(1.5, 5.0) + rng.uniform(0, 6)) ** 2
    body = _band(rng.standard_normal(n), 30, rng.uniform(300, 700), sr, 2)
    whistle = 0.05 * _band(rng.standard_normal(n), 700, 900, sr, 2) * gust
    return body * gust + whistle


def construction(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Building site: periodic hammer impacts with ringing plus an on/off drill buzz."""
    t = _t(n, sr)
    out = np.zeros(n)
    period = rng.uniform(0.25, 0.7)
    ring_f = rng.uniform(1500, 3500)
    dt = np.arange(int(0.15 * sr)) / sr
    hit = np.exp(-dt * 40) * np.sin(2 * np.pi * ring_f * dt)
    pos = rng.uniform(0, period)
    while pos < n / sr:
        _add(out, int(pos * sr), hit * rng.uniform(0.7, 1.0))
        pos += period * rng.uniform(0.9, 1.1)
    drill_on = (np.sin(2 * np.pi * t / rng.uniform(1.0, 3.0) + rng.uniform(0, 6)) > 0.2).astype(
        float
    )
    f = rng.uniform(90, 200)
    saw = 2 * np.mod(f * t, 1.0) - 1
    drill = _band(saw + 0.3 * rng.standard_normal(n), 80, 3000, sr) * _band(
        drill_on, None, 30.0, sr, 1
    )
    return out + 0.6 * drill


SYNTHS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    name: globals()[name] for name in SOUND_CLASSES
}
"""Synthesiser for each class: f(rng, sample_rate, n_samples) -> float waveform."""


def synthesize(name: str, rng: np.random.Generator, sample_rate: int, n: int) -> np.ndarray:
    """One randomised event track of class ``name``, normalised to unit RMS, float32."""
    try:
        fn = SYNTHS[name]
    except KeyError as e:
        raise ValueError(
            f"unknown sound class {name!r}; expected one of {', '.join(SOUND_CLASSES)}"
        ) from e
    x = fn(rng, sample_rate, n)
    rms = float(np.sqrt(np.mean(x * x)))
    return (x / max(rms, 1e-8)).astype(np.float32)


def background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Background noise with a random spectral tilt (white to brown-ish), unit RMS."""
    w = rng.standard_normal(n)
    a = rng.uniform(0.0, 0.995)
    x = signal.lfilter([1.0 - a], [1.0, -a], w)  # one-pole low-pass: a = 0 is white
    return (x / max(float(x.std()), 1e-8)).astype(np.float32)


def mix_clip(
    classes: tuple[str, ...], rng: np.random.Generator, sample_rate: int, seconds: float
) -> np.ndarray:
    """Mix one clip of the given classes: random levels per class, background noise, peak-safe, float32."""
    if not classes:
        raise ValueError("mix_clip needs at least one sound class")
    n = int(round(sample_rate * seconds))
    if n < 16:
        raise ValueError(f"clip too short: {seconds} s at {sample_rate} Hz is {n} samples")
    out = np.zeros(n, dtype=np.float32)
    for name in classes:
        gain_db = rng.uniform(-8.0, 0.0)
        out += synthesize(name, rng, sample_rate, n) * np.float32(10 ** (gain_db / 20))
    snr_db = rng.uniform(12.0, 30.0)
    out += background(rng, n) * np.float32(10 ** (-snr_db / 20))
    level = 10 ** (rng.uniform(-26.0, -14.0) / 20)  # target RMS re full scale
    out *= np.float32(level / max(float(np.sqrt(np.mean(out * out))), 1e-8))
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out *= np.float32(0.99 / peak)
    return out
