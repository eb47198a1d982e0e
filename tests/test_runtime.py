from pathlib import Path

from dinoseg import runtime


def test_home_and_defaults_follow_one_variable(tmp_path: Path) -> None:
    env = {"DINOSEG_HOME": str(tmp_path / "h")}
    assert runtime.home(env) == tmp_path / "h"
    assert runtime.tracking_uri(env) == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert runtime.broker_url(env).startswith("sqla+sqlite:///")
    assert str(tmp_path / "h" / "celery") in runtime.broker_url(env)
    assert runtime.results_dir(env) == tmp_path / "h" / "results"
    assert not (tmp_path / "h").exists()  # nothing is created by asking


def test_explicit_services_win(tmp_path: Path) -> None:
    env = {
        "DINOSEG_HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "LABEL_STUDIO_URL": "http://127.0.0.1:8081/",
    }
    assert runtime.tracking_uri(env) == "http://127.0.0.1:5000"
    assert runtime.broker_url(env) == "redis://127.0.0.1:6379/0"
    assert runtime.label_studio_url(env) == "http://127.0.0.1:8081"
    assert runtime.ensure(tmp_path / "a" / "b").is_dir()
