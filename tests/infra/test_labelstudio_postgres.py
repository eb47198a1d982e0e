"""Label Studio on PostgreSQL, by configuration alone (DJANGO_DB + POSTGRE_* in the env): the
same `python -m infra.labelstudio start` the local stack uses, its users and projects landing
in a throwaway database on the machine's PostgreSQL."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from tests.infra.conftest import PG_HOST, PG_PORT, PG_USER, throwaway_database
from tests.workers.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _ls(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.labelstudio", command,
                           "--timeout", str(timeout)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout + 30)  # fmt: skip


def test_label_studio_keeps_its_data_in_postgresql(tmp_path: Path, postgres: str) -> None:
    if not (ROOT / ".venv-labelstudio" / "bin" / "label-studio").is_file():
        pytest.fail("Label Studio is missing: run infra/labelstudio/install.sh (make test does)")
    token = secrets.token_hex(20)
    with throwaway_database("ls_pg") as db:
        url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "DINOSEG_HOME": str(tmp_path), "LABEL_STUDIO_URL": url,
               "LABEL_STUDIO_API_KEY": token, "LABEL_STUDIO_USERNAME": "pg@example.com",
               "LABEL_STUDIO_PASSWORD": secrets.token_hex(8), "DJANGO_DB": "default",
               "POSTGRE_NAME": db, "POSTGRE_USER": PG_USER, "POSTGRE_PASSWORD": "",
               "POSTGRE_HOST": PG_HOST, "POSTGRE_PORT": str(PG_PORT),
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        started = _ls("start", env, 300)
        try:
            assert started.returncode == 0, started.stderr + started.stdout
            request = urllib.request.Request(
                f"{url}/api/projects", method="POST",
                data=json.dumps({"title": "pg-check"}).encode(),
                headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as reply:
                assert reply.status == 201
        finally:
            _ls("stop", env, 60)
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db,
                                connect_timeout=5)  # fmt: skip
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT email FROM htx_user")
                assert ("pg@example.com",) in cur.fetchall()
                cur.execute("SELECT title FROM project")
                assert cur.fetchall() == [("pg-check",)]
        finally:
            conn.close()
