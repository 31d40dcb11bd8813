"""The README's first command, in its fast mode: tiny world, tiny preset, every real service."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout: int) -> tuple[int, str]:
    """Run a command with its output in a file: background services it starts may keep
    inherited pipes open, and a file never blocks the test on them."""
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    return proc.returncode, log.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_make_demo_fast_ends_with_a_live_dashboard_and_a_non_empty_map():
    home = Path(os.environ["PSM_HOME"]) / f"test-demo-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PSM_HOME": str(home),
        "PSM_PG_PORT": str(_free_port()),
        "PSM_REDIS_PORT": str(_free_port()),
        "PSM_DASHBOARD_PORT": str(_free_port()),
    }
    for key in ("PSM_DATABASE_URL", "PSM_BROKER_URL", "PSM_READER_DATABASE_URL", "PSM_RESULT_BACKEND"):
        env.pop(key, None)
    try:
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        code, text = _run(["make", "demo-fast"], env, artifacts / "demo-fast.log", 1500)
        assert code == 0, text[-6000:]
        assert "PSM Maps is up" in text
        port = env["PSM_DASHBOARD_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
            assert resp.status == 200
            assert "streamlit" in resp.read().decode().lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=30) as resp:
            assert resp.status == 200
        psm = str(ROOT / ".venv" / "bin" / "psm")
        ranked = subprocess.run(
            [psm, "query", "rank", "1", "--month", "5", "--hour", "6", "--audio-source", "aporee",
             "--zoom", "5", "-k", "5"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert ranked.returncode == 0, ranked.stdout + ranked.stderr
        rows = [line for line in ranked.stdout.splitlines() if line.startswith("│")]
        assert len(rows) == 5, ranked.stdout
        # A second run reuses the world, the checkpoint and the evaluation.
        code, text = _run(["make", "demo-fast"], env, artifacts / "demo-fast-again.log", 900)
        assert code == 0, text[-6000:]
        assert text.count("reusing") >= 5 and "already running" in text
    finally:
        subprocess.run(["bash", "scripts/stop.sh"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
