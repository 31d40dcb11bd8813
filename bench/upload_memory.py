"""Dashboard memory around a large audio upload: what the server keeps after the session closes.

Starts the real dashboard (``streamlit run dashboard/app.py``) against the database the settings
name (a registered model with its checkpoint must be there), writes a float32 stereo WAV of
``--seconds`` seconds, and for each of ``--rounds`` rounds opens a headless Chromium session,
picks "Upload audio", uploads the clip, waits for the run to finish, closes the session and waits
``--settle`` seconds. It reports the server's resident memory (VmRSS) before the first round, at
the end of each upload and after each session closed, and the peak (VmHWM).

    PSM_HOME=... .venv/bin/python bench/upload_memory.py --seconds 480 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PSM_CHROMIUM", "/usr/bin/chromium")


def _mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _held(base: str) -> str:
    """What Streamlit's metrics say the upload manager and the media storage hold, in MB."""
    import re

    with urllib.request.urlopen(f"{base}/_stcore/metrics", timeout=10) as r:
        text = r.read().decode()
    out = []
    for kind, label in (("UploadedFileManager", "uploads"), ("st_memory_media_file_storage", "media")):
        found = re.findall(rf'^cache_memory_bytes\{{cache_type="{kind}"[^}}]*\}} (\d+)', text, re.M)
        out.append(f"{label} {sum(int(n) for n in found) / 1e6:.1f} MB")
    return ", ".join(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settle(page, timeout: float = 600.0) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_timeout(500)
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 4:
        quiet = quiet + 1 if page.locator('[data-testid="stStatusWidget"]').count() == 0 else 0
        page.wait_for_timeout(250)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=480.0, help="length of the uploaded clip")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=200.0,
                    help="seconds to wait after a session closes (Streamlit keeps a closed session for "
                         "server.disconnectedSessionTTL, 120 s by default, before it frees its files; the dashboard looks every 30 s)")
    ap.add_argument("--app", type=Path, default=ROOT / "dashboard" / "app.py", help="the dashboard entry point")
    args = ap.parse_args()

    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="psm-upload-mem-"))
    clip = work / "long_clip.wav"
    sr = 48_000
    rng = np.random.default_rng(0)
    with sf.SoundFile(clip, "w", samplerate=sr, channels=2, subtype="FLOAT") as out:
        left = int(args.seconds * sr)
        while left > 0:
            n = min(left, sr * 30)
            out.write((0.1 * rng.standard_normal((n, 2))).astype(np.float32))
            left -= n
    size_mb = clip.stat().st_size / 2**20
    port = _free_port()
    env = {**os.environ, "MPLBACKEND": "Agg", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(work / "streamlit.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(args.app),
                             "--server.port", str(port), "--server.headless", "true"],
                            cwd=args.app.parent.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        print(f"clip: {args.seconds:g} s, 2 channels, float32 at {sr} Hz = {size_mb:.0f} MB")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            # a first session without an upload: an example clip loads the model and the page's caches
            page = browser.new_page()
            page.goto(f"{base}/", wait_until="domcontentloaded")
            expect(page.get_by_text("Example clip", exact=True).first).to_be_visible(timeout=120_000)
            page.get_by_text("Example clip", exact=True).first.click()
            try:
                expect(page.locator('[data-testid="stAudio"]').first).to_be_visible(timeout=300_000)
            finally:
                page.screenshot(path=str(work / "first_session.png"), full_page=True)
            _settle(page)
            page.close()
            time.sleep(args.settle)
            print(f"before any upload (page and model loaded): RSS {_mib(proc.pid, 'VmRSS'):,.0f} MiB "
                  f"({_held(base)})")
            for r in range(1, args.rounds + 1):
                page = browser.new_page()
                page.goto(f"{base}/", wait_until="domcontentloaded")
                expect(page.get_by_text("Upload audio", exact=True)).to_be_visible(timeout=120_000)
                page.get_by_text("Upload audio", exact=True).click()
                _settle(page)
                started = time.monotonic()
                page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(clip))
                # done when the clip's player (st.audio) or an error is shown
                expect(page.locator('[data-testid="stAudio"], [data-testid="stAlertContentError"]').first
                       ).to_be_visible(timeout=600_000)
                _settle(page)
                page.screenshot(path=str(work / f"round{r}.png"), full_page=True)
                errors = [e.inner_text() for e in page.locator(
                    '[data-testid="stException"], [data-testid="stAlertContentError"]').all()]
                took = time.monotonic() - started
                during, held_during = _mib(proc.pid, "VmRSS"), _held(base)
                page.close()
                time.sleep(args.settle)
                after, held_after = _mib(proc.pid, "VmRSS"), _held(base)
                print(f"round {r}: upload handled in {took:.1f} s, RSS {during:,.0f} MiB ({held_during}); "
                      f"{args.settle:g} s after the session closed: RSS {after:,.0f} MiB ({held_after})"
                      + (f"; errors: {errors}" if errors else ""))
            browser.close()
        print(f"screenshots and the server log in {work}")
        print(f"peak RSS (VmHWM) {_mib(proc.pid, 'VmHWM'):,.0f} MiB")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
