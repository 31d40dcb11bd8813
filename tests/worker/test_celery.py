"""Real Celery workers (subprocesses) on real Redis and PostgreSQL: the CLI, faults and races."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from worker_helpers import CELERY, PSM, ROOT, celery_app_for, geotiff_region, wait_job, worker_env

from psm_db import jobs
from psm_db.engine import connect, connection
from worker import embed
from worker.embed import ConditionSpec, EmbedRequest, Limits
from worker.imagery import ImagerySpec

pytestmark = pytest.mark.slow


def _table_counts(db_url: str, source: str, version: str) -> dict[str, int]:
    """Rows stored for one imagery source name (each test uses its own)."""
    with connect(db_url) as conn:
        tiles, feats, emb, distinct, bad = conn.execute(
            "SELECT (SELECT count(*) FROM psm.tiles WHERE imagery_source = %(s)s),"
            " (SELECT count(*) FROM psm.tile_features f JOIN psm.tiles t ON t.id = f.tile_id"
            "   WHERE t.imagery_source = %(s)s AND f.model_version = %(v)s),"
            " count(*), count(DISTINCT (e.condition_id, e.tile_id)),"
            " count(*) FILTER (WHERE NOT (e.var_sum > 0) OR e.var_sum = 'NaN' OR vector_dims(e.mu) <> e.dim)"
            " FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id"
            " WHERE t.imagery_source = %(s)s AND e.model_version = %(v)s",
            {"s": source, "v": version},
        ).fetchone()
    return {"tiles": tiles, "features": feats, "embeddings": emb, "distinct": distinct, "bad": bad}


def _submit(db_url: str, queue: str, request: EmbedRequest, limits: Limits):
    app = celery_app_for(db_url, queue)
    with connection(db_url) as conn:
        return embed.submit(conn, request, limits,
                            lambda j: str(app.send_task("psm.embed_region", args=[j]).id))


def test_celery_cli_embeds_a_geotiff_region(db_url, model_version, geotiff, workers, queue_name):
    workers.start()
    source = f"cli-{uuid.uuid4().hex[:6]}"
    env = worker_env(db_url, queue_name, PSM_CHUNK_TILES="12")
    cmd = [CELERY, "-A", "worker", "embed_region", "--region", geotiff_region(geotiff, 0.25),
           "--model", model_version.version[:8], "--imagery", "geotiff", "--imagery-path", str(geotiff),
           "--size-px", "32", "--source-name", source, "-c", "month=5,hour=20,audio=inaturalist",
           "-c", "caption=metadata", "--wait", "--timeout", "120"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr + workers.logs()
    job_id = out.stdout.strip().splitlines()[-1]
    uuid.UUID(job_id)
    assert "succeeded" in out.stderr
    with connection(db_url) as conn:
        row = jobs.get_job(conn, job_id)
        chunks = jobs.chunk_states(conn, job_id)
    assert row["status"] == "succeeded" and row["done"] == row["total"] > 12
    assert len(chunks) > 1 and all(c["status"] == "succeeded" for c in chunks)
    counts = _table_counts(db_url, source, model_version.version)
    assert counts == {"tiles": row["total"], "features": row["total"], "embeddings": 2 * row["total"],
                      "distinct": 2 * row["total"], "bad": 0}
    # the planner's task state is in the Redis result backend
    app = celery_app_for(db_url, queue_name)
    assert app.AsyncResult(row["celery_task_id"]).state == "SUCCESS"


@pytest.mark.parametrize(
    "program, args, message",
    [
        (PSM, ["--region", "POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))"], "Self-intersection"),
        (CELERY, ["--hour", "24"], "hour must be"),
        (PSM, ["--min-valid", "1.5"], "--min-valid is a share of a tile's pixels between 0 and 1"),
        (CELERY, ["--imagery", "geotiff", "--imagery-path", "/x.tif", "--bands", "1,2"],
         "bands must be one or three 1-based band numbers"),
        (PSM, ["--imagery", "geotiff", "--imagery-path", "/x.tif", "--bands", "red"], "--bands takes 1-based"),
        (CELERY, ["--bands", "4,3,2"], "--bands picks bands of a GeoTIFF"),
    ],
)
def test_bad_input_fails_fast_in_cli_and_job_row(db_url, model_version, queue_name, program, args, message):
    """Both command lines (the rest of the bad inputs: tests/worker/test_embed.py, in-process)."""
    base = {"--region": "0.0,51.0,0.02,51.02", "--model": model_version.version}
    for flag in ("--region", "--model"):
        if flag in args:
            base.pop(flag)
    sub = ["embed-region"] if program == PSM else ["-A", "worker", "embed_region"]
    cmd = [program, *sub, *[x for kv in base.items() for x in kv], *args]
    with connect(db_url) as conn:
        before = conn.execute("SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.embeddings),"
                              " (SELECT count(*) FROM psm.jobs WHERE status = 'failed')").fetchone()
    out = subprocess.run(cmd, cwd=ROOT, env=worker_env(db_url, queue_name), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr.replace("\n", " ")
    assert out.stdout.strip() == ""  # no job id: nothing was queued
    with connect(db_url) as conn:
        after = conn.execute("SELECT (SELECT count(*) FROM psm.tiles), (SELECT count(*) FROM psm.embeddings),"
                             " (SELECT count(*) FROM psm.jobs WHERE status = 'failed')").fetchone()
        err = conn.execute("SELECT error FROM psm.jobs WHERE status = 'failed' ORDER BY created_at DESC"
                           " LIMIT 1").fetchone()[0]
    assert after[:2] == before[:2]  # nothing written
    assert after[2] == before[2] + 1 and message in err


def test_killed_worker_is_replaced_and_job_completes_exactly(db_url, model_version, workers, queue_name, settings):
    source = f"kill-{uuid.uuid4().hex[:6]}"
    request = EmbedRequest(
        # enough chunks that the job is still running when the poll sees its first one done (the
        # world renders a batch of tiles in one vectorised call, so a small job ends between polls)
        region="0.0,51.0,0.36,51.18", model_version=model_version.version, zooms=(1,),
        imagery=ImagerySpec(kind="world", seed=3, size_px=256, gsd=10.0, name=source),
        conditions=(ConditionSpec(), ConditionSpec(month=6, hour=12)), chunk_tiles=3,
    )
    job_id, plan = _submit(db_url, queue_name, request, Limits())
    assert len(plan.chunks) >= 24
    first = workers.start()
    wait_job(db_url, str(job_id), timeout=120, until=lambda r: r["done"] > 0)
    workers.kill(first)  # SIGKILL the whole worker, mid-job
    with connection(db_url) as conn:
        row = jobs.get_job(conn, str(job_id))
    assert row["status"] == "running" and 0 < row["done"] < row["total"], row
    # The worst moment to die: inside a restore scan, holding the lock every worker's scan takes
    # (the scan runs right after each task). Kombu's default lease on it (300 s) stalled the job.
    import redis

    from worker.app import UNACKED_MUTEX_EXPIRE
    client = redis.Redis.from_url(settings.broker)
    assert client.lock("unacked_mutex", timeout=UNACKED_MUTEX_EXPIRE).acquire(blocking=False) or \
        client.pttl("unacked_mutex") <= UNACKED_MUTEX_EXPIRE * 1000
    workers.start()
    row = wait_job(db_url, str(job_id), timeout=150)
    assert row["status"] == "succeeded", (row, workers.logs())
    n = plan.total
    assert _table_counts(db_url, source, model_version.version) == {
        "tiles": n, "features": n, "embeddings": 2 * n, "distinct": 2 * n, "bad": 0}
    assert row["result"]["rows_written"] == 2 * n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_cluster(cluster_settings):
    """A throwaway PostgreSQL cluster of our own, so restarting it disturbs nobody."""
    from psm_db import migrate, services

    own = cluster_settings()
    services.postgres_up(own)
    migrate.upgrade(own.db_url)
    return own


def test_database_restart_mid_job_retries_and_completes(own_cluster, tiny_checkpoint, workers, queue_name):
    from psm_db import services
    from psm_db.registry import register_model

    url = own_cluster.db_url
    with connection(url) as conn:
        mv = register_model(conn, tiny_checkpoint)
    source = f"restart-{uuid.uuid4().hex[:6]}"
    request = EmbedRequest(
        region="0.0,51.0,0.18,51.09", model_version=mv.version,
        imagery=ImagerySpec(kind="world", seed=4, size_px=256, gsd=10.0, name=source),
        conditions=(ConditionSpec(audio_source="freesound"),), chunk_tiles=2,
    )
    job_id, plan = _submit(url, queue_name, request, Limits())
    workers.start(db_url=url)
    wait_job(url, str(job_id), timeout=120, until=lambda r: r["done"] > 0)
    services.postgres_down(own_cluster)  # fast shutdown: running chunks lose their connection
    time.sleep(2.0)
    services.postgres_up(own_cluster)
    row = wait_job(url, str(job_id), timeout=150)
    assert row["status"] == "succeeded", (row, workers.logs())
    n = plan.total
    assert _table_counts(url, source, mv.version) == {
        "tiles": n, "features": n, "embeddings": n, "distinct": n, "bad": 0}
    assert row["done"] == n
    assert "Retry in" in workers.logs(tail=10**7)  # the restart was seen, and the chunk retried


def test_two_jobs_same_region_write_each_row_once(db_url, model_version, geotiff, workers, queue_name):
    source = f"race-{uuid.uuid4().hex[:6]}"
    request = EmbedRequest(
        region=geotiff_region(geotiff, 0.2), model_version=model_version.version,
        imagery=ImagerySpec(kind="geotiff", path=str(geotiff), size_px=32, name=source),
        conditions=(ConditionSpec(month=1),), chunk_tiles=10,
    )
    workers.start()
    workers.start()
    a, plan = _submit(db_url, queue_name, request, Limits())
    b, _ = _submit(db_url, queue_name, request, Limits())
    ra, rb = wait_job(db_url, str(a), timeout=150), wait_job(db_url, str(b), timeout=150)
    assert ra["status"] == rb["status"] == "succeeded", (ra, rb, workers.logs())
    n = plan.total
    assert _table_counts(db_url, source, model_version.version) == {
        "tiles": n, "features": n, "embeddings": n, "distinct": n, "bad": 0}
    assert ra["result"]["rows_written"] + rb["result"]["rows_written"] == n  # each row written once


def test_worker_module_loads_lazily():
    """Importing the tasks must not load a model or connect anywhere."""
    code = ("import sys, worker.celery, worker.tasks; from worker import model_runner; "
            "assert not model_runner._MODELS; print(sorted(t for t in worker.celery.app.tasks if t.startswith('psm.')))")
    out = subprocess.run([str(Path(CELERY).with_name("python")), "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PSM_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 0, out.stderr
    assert "psm.embed_chunk" in out.stdout and "psm.embed_region" in out.stdout and "psm.train" in out.stdout


def test_nodata_tiles_are_skipped_and_a_truncated_cog_fails_whole(db_url, model_version, workers, queue_name,
                                                                  tmp_path):
    """On real workers: `psm job` says how many tiles had no data; a truncated file leaves no rows."""
    from test_embed import _fraction_box, _nodata_border_tif, _truncated_cog

    workers.start()
    tif = _nodata_border_tif(tmp_path / "border.tif")
    border = f"border-{uuid.uuid4().hex[:6]}"
    job, plan = _submit(db_url, queue_name, EmbedRequest(
        region=_fraction_box(tif, 0.05, 0.45), model_version=model_version.version, chunk_tiles=64,
        imagery=ImagerySpec(kind="geotiff", path=str(tif), size_px=32, name=border)), Limits())
    row = wait_job(db_url, str(job), timeout=150)
    assert row["status"] == "succeeded", (row, workers.logs())
    assert _table_counts(db_url, border, model_version.version)["tiles"] == 0
    out = subprocess.run([PSM, "job", str(job)], cwd=ROOT, env=worker_env(db_url, queue_name),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"skipped for lack of data: {plan.total} tile(s) (under 50% of their pixels hold data)" in out.stdout
    assert "nothing was embedded" in out.stdout

    cog = _truncated_cog(tmp_path)
    name = f"trunc-{uuid.uuid4().hex[:6]}"
    job, _ = _submit(db_url, queue_name, EmbedRequest(
        region=geotiff_region(cog, 0.02), model_version=model_version.version, chunk_tiles=400,
        imagery=ImagerySpec(kind="geotiff", path=str(cog), size_px=32, name=name)), Limits())
    row = wait_job(db_url, str(job), timeout=150)
    assert row["status"] == "failed", (row, workers.logs())
    assert f"cannot read the imagery file {cog}" in row["error"]
    with connection(db_url) as db:
        states = jobs.chunk_states(db, str(job))
    done = sum(c["tiles"] for c in states if c["status"] == "succeeded")
    counts = _table_counts(db_url, name, model_version.version)
    assert counts["tiles"] == counts["features"] == counts["embeddings"] == done  # failed chunks: nothing
    assert any(c["status"] == "failed" for c in states)


@pytest.mark.parametrize("program, args", [
    (PSM, ["embed-region", "--region", "0.0,51.0,0.02,51.02", "--model", "{model}"]),
    (CELERY, ["-A", "worker", "embed_region", "--region", "0.0,51.0,0.02,51.02", "--model", "{model}"]),
    (PSM, ["submit-train", "{dataset}", "--preset", "tiny"]),
])
def test_broker_down_at_submit_fails_fast_and_leaves_no_queued_job(db_url, model_version, queue_name, tmp_path,
                                                                   program, args):
    """Redis down: the command showed a traceback after ~25 s and the job row stayed queued for ever."""
    port = _free_port()  # nothing listens there
    broker = f"redis://127.0.0.1:{port}/0"
    env = worker_env(db_url, queue_name, PSM_BROKER_URL=broker, PSM_RESULT_BACKEND=f"redis://127.0.0.1:{port}/1")
    argv = [a.format(model=model_version.version, dataset=tmp_path) for a in args]
    with connect(db_url) as conn:
        before = {r[0] for r in conn.execute("SELECT id FROM psm.jobs")}
    started = time.monotonic()
    out = subprocess.run([program, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    message = " ".join(out.stderr.split())
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert f"cannot reach the Celery broker at {broker}" in message, message
    assert "psm services up" in message and "nothing was queued" in message
    assert elapsed < 10, f"took {elapsed:.1f} s"
    with connect(db_url) as conn:
        new = conn.execute("SELECT id, status, error FROM psm.jobs").fetchall()
    new = [r for r in new if r[0] not in before]
    assert len(new) == 1, new
    assert new[0][1] == "failed" and f"cannot reach the Celery broker at {broker}" in new[0][2]  # not queued
    print(f"broker down: error after {elapsed:.2f} s ({program.rsplit('/', 1)[-1]} {argv[0]})")


def test_sigkilled_worker_chunk_is_requeued_by_its_lease_without_a_manual_step(db_url, model_version, workers,
                                                                                queue_name):
    """A SIGKILLed worker's chunk stayed running until the visibility timeout (~70 min) or `psm job --resume`.

    Here the visibility timeout is an hour, so only the lease can bring the chunk back.
    """
    source = f"lease-{uuid.uuid4().hex[:6]}"
    env = worker_env(db_url, queue_name, PSM_VISIBILITY_TIMEOUT="3600", PSM_CHUNK_LEASE="4",
                     PSM_HEARTBEAT_INTERVAL="0.5", PSM_STALE_SCAN_INTERVAL="1")
    request = EmbedRequest(
        # enough chunks that the job is still running when the poll sees its first one done (the
        # world renders a batch of tiles in one vectorised call, so a small job ends between polls)
        region="0.0,51.0,0.36,51.18", model_version=model_version.version, zooms=(1,),
        imagery=ImagerySpec(kind="world", seed=5, size_px=256, gsd=10.0, name=source),
        conditions=(ConditionSpec(), ConditionSpec(month=6, hour=12)), chunk_tiles=3,
    )
    job_id, plan = _submit(db_url, queue_name, request, Limits())
    assert len(plan.chunks) >= 8
    first = workers.start(env=env)

    def mid_chunk(row: dict) -> bool:
        with connection(db_url) as conn:
            running = [c for c in jobs.chunk_states(conn, str(job_id)) if c["status"] == "running"]
        return row["done"] > 0 and bool(running)

    # SIGKILL the whole worker while it embeds a chunk. A chunk can finish between the poll and
    # the kill, so freeze the worker first (SIGSTOP stops its heartbeat too), look again, and kill
    # only if a chunk is still marked running; otherwise let it go on and try again.
    for _ in range(20):
        wait_job(db_url, str(job_id), timeout=120, until=mid_chunk)
        workers.send(first, signal.SIGSTOP)
        time.sleep(0.3)  # a commit already on the wire lands
        with connection(db_url) as conn:
            row = jobs.get_job(conn, str(job_id))
            running = [c["chunk"] for c in jobs.chunk_states(conn, str(job_id)) if c["status"] == "running"]
        if running:
            break
        workers.send(first, signal.SIGCONT)
    workers.kill(first)
    killed = time.monotonic()
    assert row["status"] == "running" and 0 < row["done"] < row["total"] and running, row
    # with no worker alive the chunk stays running; once its lease runs out, psm job says it is stale
    time.sleep(4.5)
    out = subprocess.run([PSM, "job", str(job_id)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"stale: chunk {running[0]} is marked running on " in out.stdout, out.stdout
    assert "no heartbeat" in out.stdout and "PSM_CHUNK_LEASE 4 s" in out.stdout
    second = time.monotonic()
    workers.start(env=env)
    row = wait_job(db_url, str(job_id), timeout=150)
    recovered = time.monotonic() - second
    assert row["status"] == "succeeded", (row, workers.logs())
    n = plan.total
    assert _table_counts(db_url, source, model_version.version) == {
        "tiles": n, "features": n, "embeddings": 2 * n, "distinct": 2 * n, "bad": 0}
    assert row["result"]["rows_written"] == 2 * n
    with connection(db_url) as conn:
        chunks = jobs.chunk_states(conn, str(job_id))
        events = jobs.job_events(conn, str(job_id))
    assert all(c["status"] == "succeeded" for c in chunks)
    assert any(level == "warning" and f"chunk {running[0]}: re-queued: its worker" in msg for level, msg in events), events
    print(f"lease: job finished {recovered:.1f} s after a new worker started "
          f"({time.monotonic() - killed:.1f} s after the SIGKILL)")


def _thread_lines(log: Path, want: int, timeout: float = 90.0) -> list[tuple[int, int]]:
    """(pid, torch threads) from the worker's "process N: M torch threads" lines, once ``want`` are in."""
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [(int(a), int(b)) for a, b in re.findall(r"process (\d+): (\d+) torch threads", log.read_text())]
        if len(found) >= want:
            return found
        time.sleep(0.5)
    raise AssertionError(f"fewer than {want} thread lines in the worker log:\n{log.read_text()}")


@pytest.mark.parametrize("pool, concurrency, env_threads, expected", [
    ("prefork", 2, None, "share"),  # PSM_TORCH_THREADS unset: each process gets cores // 2
    ("prefork", 2, "3", 3),  # set: it wins
])
def test_prefork_processes_share_the_cores_unless_torch_threads_is_set(db_url, queue_name, tmp_path, pool,
                                                                       concurrency, env_threads, expected):
    from worker.tasks import default_torch_threads

    cores = len(os.sched_getaffinity(0))
    want = default_torch_threads(concurrency, pool, cores) if expected == "share" else expected
    env = worker_env(db_url, queue_name)
    env.pop("PSM_TORCH_THREADS")
    if env_threads is not None:
        env["PSM_TORCH_THREADS"] = env_threads
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([CELERY, "-A", "worker", "worker", "-P", pool, "-c", str(concurrency),
                                 "-Q", queue_name, "-n", f"threads-{uuid.uuid4().hex[:6]}@%h", "--loglevel=INFO",
                                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        lines = _thread_lines(log, concurrency)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert len({pid for pid, _ in lines}) == concurrency and proc.pid not in {pid for pid, _ in lines}
    assert {threads for _, threads in lines} == {want}


def test_default_torch_threads_divides_the_cores_over_the_slots():
    from worker.tasks import default_torch_threads

    assert default_torch_threads(4, "prefork", 8) == 2
    assert default_torch_threads(3, "prefork", 2) == 1  # never 0: at least one thread each
    assert default_torch_threads(2, "threads", 8) == 4
    assert default_torch_threads(8, "solo", 8) == 0  # one task at a time keeps PyTorch's default
    with pytest.raises(ValueError, match="at least 1"):
        default_torch_threads(0, "prefork", 8)
