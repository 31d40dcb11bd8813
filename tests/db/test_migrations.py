from __future__ import annotations

import ast
import re
from pathlib import Path

import psycopg
import pytest

from psm_db import migrate

TABLES = {
    "model_versions", "tiles", "tile_features", "conditions", "embeddings", "queries",
    "region_sets", "regions", "jobs", "job_chunks", "job_events", "eval_runs", "eval_metrics",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'psm'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_creates_every_table_and_csd(db_url):
    assert TABLES <= _tables(db_url)
    with psycopg.connect(db_url) as c:
        volatility, strict, parallel = c.execute(
            "SELECT provolatile, proisstrict, proparallel FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'psm' AND p.proname = 'csd'"
        ).fetchone()
    assert (volatility, strict, parallel) == ("i", True, "s")


def test_downgrade_base_then_upgrade_head_round_trips(fresh_db_url):
    migrate.upgrade(fresh_db_url)
    assert migrate.current(fresh_db_url) is not None
    assert TABLES <= _tables(fresh_db_url)
    migrate.downgrade(fresh_db_url, "base")
    assert _tables(fresh_db_url) == set()
    assert migrate.current(fresh_db_url) is None
    migrate.upgrade(fresh_db_url)
    assert TABLES <= _tables(fresh_db_url)
    with psycopg.connect(fresh_db_url) as c:
        value = c.execute("SELECT psm.csd('[0,0]', '[1,1]', '[3,4]', '[1,1]')").fetchone()[0]
    assert abs(value - 29.0) < 1e-9


def test_alembic_cli_upgrade_head(fresh_db_url, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PSM_DATABASE_URL": fresh_db_url, "HOME": str(tmp_path)}
    alembic = Path(sys.executable).parent / "alembic"
    out = subprocess.run([str(alembic), "upgrade", "head"], cwd=root, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "embeddings" in _tables(fresh_db_url)


# --------------------------------------------------------------------------- frozen revisions

PACKAGE = Path(migrate.__file__).resolve().parent
VERSIONS = PACKAGE / "migrations" / "versions"
SQL = PACKAGE / "sql"


def _revision_files() -> list[Path]:
    files = sorted(VERSIONS.glob("*.py"))
    assert files, f"no revisions in {VERSIONS}"
    return files


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_revisions_import_only_alembic_and_env_never_psm_model():
    for path in _revision_files():
        assert _imported_modules(path) <= {"alembic"}, path.name
    env = _imported_modules(PACKAGE / "migrations" / "env.py")
    assert not any(m.split(".")[0] == "psm_model" for m in env)
    assert not hasattr(migrate, "revision_module")


def test_revisions_form_one_chain_from_the_baseline():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://unused/unused"))
    base = script.get_revision("0007")
    assert base.down_revision is None
    assert script.get_bases() == ["0007"] and len(script.get_heads()) == 1
    assert not set(migrate.RETIRED_REVISIONS) & {r.revision for r in script.walk_revisions()}


def _quoted(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"'([^']*)'", text))


def test_vocabulary_literals_in_the_revisions_are_psm_model_metadata():
    from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

    found = {"audio_source": 0, "caption_source": 0}
    for path in [*_revision_files(), *SQL.glob("*.sql")]:
        text = path.read_text()
        for column, names in (("audio_source", AUDIO_SOURCES), ("caption_source", CAPTION_SOURCES)):
            # table CHECK constraints: audio_source IN ('a', 'b')
            for match in re.finditer(rf"\b{column} IN \(([^)]*)\)", text):
                assert _quoted(match.group(1)) == names, (path.name, match.group(0))
                found[column] += 1
            # psm.check_ranking_args: p_audio_source = ANY (ARRAY['a', 'b']::text[]) and its message
            for match in re.finditer(rf"p_{column} = ANY \(ARRAY\[([^\]]*)\]", text):
                assert _quoted(match.group(1)) == names, (path.name, match.group(0))
                found[column] += 1
            label = column.replace("_", " ")
            for match in re.finditer(rf"unknown {label} %; expected one of ([^(]*) \(or NULL\)", text):
                assert tuple(match.group(1).split(", ")) == names, (path.name, match.group(0))
                found[column] += 1
    # the table constraint, the argument check and its message, in the baseline and in sql/
    assert found["audio_source"] >= 4 and found["caption_source"] >= 4, found


def test_vocabulary_in_the_database_is_psm_model_metadata(db_url):
    from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

    with psycopg.connect(db_url) as c:
        checks = dict(c.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'psm.conditions'::regclass AND contype = 'c'").fetchall())
        body = c.execute("SELECT prosrc FROM pg_proc WHERE oid = "
                         "'psm.check_ranking_args(integer, integer, text, text, integer, integer)'"
                         "::regprocedure").fetchone()[0]
    assert _quoted(checks["conditions_audio_source_check"]) == AUDIO_SOURCES
    assert _quoted(checks["conditions_caption_source_check"]) == CAPTION_SOURCES
    arrays = re.findall(r"ARRAY\[([^\]]*)\]", body)
    assert [_quoted(a) for a in arrays] == [AUDIO_SOURCES, CAPTION_SOURCES]


def _functions(conn) -> dict[str, tuple]:
    """Every function of schema psm: its full definition, comment and privileges."""
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proname, pg_get_functiondef(p.oid), p.prosrc, "
        "obj_description(p.oid, 'pg_proc'), p.proacl::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'psm'").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _bodies(sql: str) -> list[str]:
    """The $$-quoted bodies of the CREATE FUNCTION statements of a file."""
    return re.findall(r"\bAS \$\$(.*?)\$\$", sql, flags=re.S)


def test_every_function_at_head_is_defined_once_in_psm_db_sql(db_url):
    with psycopg.connect(db_url) as c:
        before = _functions(c)
        files = {p.stem: p.read_text() for p in SQL.glob("*.sql")}
        assert {f[0] for f in before.values()} == set(files), "one psm_db/sql/<name>.sql per function"
        for name, sql in files.items():
            # the body of the database's function is the file's, whitespace aside
            srcs = sorted(" ".join(f[2].split()) for f in before.values() if f[0] == name)
            assert sorted(" ".join(b.split()) for b in _bodies(sql)) == srcs, name
            # replaying the file changes nothing: same header, defaults, settings, body, comment
            with c.transaction(force_rollback=True):
                c.execute(sql)
                after = _functions(c)
            assert after == before, f"psm_db/sql/{name}.sql differs from the database's definition"


def test_a_database_at_a_retired_revision_is_refused_with_what_to_do(fresh_db_url, tmp_path):
    import subprocess
    import sys

    migrate.upgrade(fresh_db_url, "0007")
    with psycopg.connect(fresh_db_url) as c:
        c.execute("UPDATE alembic_version SET version_num = '0005'")
    with pytest.raises(migrate.RetiredRevisionError, match=r"revision 0005.*0001-0007.*psm db upgrade"):
        migrate.upgrade(fresh_db_url)
    with pytest.raises(migrate.RetiredRevisionError):
        migrate.downgrade(fresh_db_url, "base")
    # the plain alembic command (env.py) says the same
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PSM_DATABASE_URL": fresh_db_url, "HOME": str(tmp_path)}
    out = subprocess.run([str(Path(sys.executable).parent / "alembic"), "upgrade", "head"], cwd=root,
                         env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "retired revision of the old migration chain" in out.stderr
    assert migrate.current(fresh_db_url) == "0005"


GAUSSIAN_FORMS = {"check_query_gaussian", "rank_tiles_gaussian", "rank_regions_gaussian"}


def test_0008_adds_the_gaussian_forms_and_its_downgrade_restores_0007(fresh_db_url):
    migrate.upgrade(fresh_db_url, "0007")
    with psycopg.connect(fresh_db_url) as c:
        at_0007 = _functions(c)
    assert not GAUSSIAN_FORMS & {f[0] for f in at_0007.values()}
    migrate.upgrade(fresh_db_url, "0008")
    assert migrate.current(fresh_db_url) == "0008"
    with psycopg.connect(fresh_db_url) as c:
        at_0008 = _functions(c)
    assert {f[0] for f in at_0008.values()} == {f[0] for f in at_0007.values()} | GAUSSIAN_FORMS
    # the query-id forms keep their signatures and comments but are new bodies
    for sig in ("rank_tiles(bigint,geometry,integer,integer,text,text,integer,integer,text)",
                "rank_regions(bigint,text,integer,integer,text,text,integer,integer,text,double precision)"):
        assert at_0008[sig][3] == at_0007[sig][3]
        assert at_0008[sig][2] != at_0007[sig][2] and "_gaussian(" in at_0008[sig][2]
    for sig, f in at_0008.items():
        if f[0] in GAUSSIAN_FORMS:
            assert "psm_reader=X" in f[4] and "psm_writer=X" in f[4], sig
    migrate.downgrade(fresh_db_url, "0007")
    assert migrate.current(fresh_db_url) == "0007"
    with psycopg.connect(fresh_db_url) as c:
        assert _functions(c) == at_0007


def test_0010_functions_and_chunk_lease_columns_and_its_downgrade_restores_0009(fresh_db_url):
    migrate.upgrade(fresh_db_url, "0009")
    with psycopg.connect(fresh_db_url) as c:
        before = _functions(c)
    migrate.upgrade(fresh_db_url, "0010")
    with psycopg.connect(fresh_db_url) as c:
        after = _functions(c)
        cols = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'psm' AND table_name = 'job_chunks'")}
    assert {"heartbeat_at", "worker"} <= cols
    changed = {sig.split("(")[0] for sig in after if after[sig] != before[sig]}
    assert changed == {"csd", "embed_hint", "raise_not_embedded"}, changed
    assert set(after) == set(before)
    migrate.downgrade(fresh_db_url, "0009")
    with psycopg.connect(fresh_db_url) as c:
        assert _functions(c) == before
        cols = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'psm' AND table_name = 'job_chunks'")}
    assert not {"heartbeat_at", "worker"} & cols
