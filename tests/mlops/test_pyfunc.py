"""A registered version is an MLflow python_function model: ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` (a real server on loopback) answer requests; bad requests get one clear
error (HTTP 400 when served)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import tiny_dinov2

URI = "models:/dinoseg-segmenter@champion"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVE_WAIT = 240  # seconds for `mlflow models serve` to answer /ping


def png(array: np.ndarray, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def scene(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy (h, w, 3) image with a bright square and the square's (h, w) 0/255 mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    image[h // 4 : h // 2, w // 4 : w // 2] = (220, 40, 40)
    mask[h // 4 : h // 2, w // 4 : w // 2] = 255
    return image, mask


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny checkpoint registered (through the register stage's code) as version 1 of
    dinoseg-segmenter, alias champion, in a sqlite store under a temporary folder."""
    from dinoseg.checkpoint import CheckpointConfig, arch_config, save_checkpoint
    from dinoseg.models import build_segmenter
    from mlops import register, registry, tracking

    tmp = tmp_path_factory.mktemp("pyfunc")
    tiny_dinov2(layers=2).save_pretrained(tmp / "bb")
    model = build_segmenter("fsdino-tiny", num_layers=2)
    config = CheckpointConfig(arch="fsdino-tiny", backbone=str(tmp / "bb"), layers=[1, 2],
                              image_size=70, arch_kwargs=arch_config(model))  # fmt: skip
    checkpoint = save_checkpoint(tmp / "ck", model, config, card="# tiny\n")
    env = {"DINOSEG_HOME": str(tmp / "var"), "DINOSEG_CACHE": str(tmp / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/var/mlflow.db",
           "MLFLOW_EXPERIMENT_NAME": "test", "DINOSEG_PIPELINE_RUN": "run-a"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(tmp)
        with tracking.stage_run("register") as run:
            run.log_artifacts(checkpoint, "model")
            mv = register.new_version(run.client, registry.MODEL_NAME, run, {"val_miou": 1.0})
        run.client.set_registered_model_alias(registry.MODEL_NAME, registry.CHAMPION, mv.version)
        yield {"dir": tmp, "env": env, "checkpoint": checkpoint}


@pytest.fixture(scope="module")
def loaded(store):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(URI)


def request_frame() -> pd.DataFrame:
    """Three queries (two sizes) on two supports, the first support shared by two rows."""
    s1, m1 = scene(1, 56, 70)
    s2, m2 = scene(2, 64, 48)
    rows = [(scene(3, 56, 70)[0], s1, m1, "car"), (scene(4, 80, 60)[0], s1, m1, "car"),
            (scene(5, 50, 50)[0], s2, m2, None)]  # fmt: skip
    return pd.DataFrame([{"query": png(q), "support_image": png(s), "support_mask": png(m),
                          "class_name": c} for q, s, m, c in rows])  # fmt: skip


def test_registered_version_is_a_python_function_model(store):
    from mlflow.models import get_model_info

    from mlops import registry

    info = get_model_info(URI)
    assert info.flavors["python_function"]["loader_module"] == "mlops.pyfunc"
    assert [c["name"] for c in info.signature.inputs.to_dict()] == [
        "query", "support_image", "support_mask", "class_name"]
    path, model_id = registry.resolve_model_uri(URI)  # serving and `dinoseg predict` still
    assert (Path(path) / "config.json").is_file() and (Path(path) / "MLmodel").is_file()
    assert model_id == "models:/dinoseg-segmenter/1"


def test_load_model_predicts_masks_as_the_served_predictor_does(store, loaded):
    from dinoseg.served import load_served

    frame = request_frame()
    answer = loaded.predict(frame)
    assert list(answer.columns) == ["mask", "confidence", "model_version"]
    assert set(answer["model_version"]) == {"models:/dinoseg-segmenter/1"}
    reference = load_served(str(store["checkpoint"]))
    for i, record in enumerate(frame.to_dict("records")):
        query = decode(record["query"])
        mask = decode(answer["mask"][i])
        assert mask.shape == query.shape[:2] and set(np.unique(mask)) <= {0, 255}
        support = decode(record["support_image"])
        reference.set_support([support], [decode(record["support_mask"]) > 0])
        expected = reference.predict([query])[0]
        assert np.array_equal(mask > 0, expected.mask)
        assert answer["confidence"][i] == pytest.approx(expected.confidence)
        assert 0.0 <= answer["confidence"][i] <= 1.0


def test_rows_sharing_a_support_encode_it_once(store):
    from dinoseg.served import load_served
    from mlops.pyfunc import SegmenterPyfunc

    predictor = load_served(str(store["checkpoint"]))
    calls: list[int] = []
    real = predictor.set_support
    predictor.set_support = lambda images, masks, name=None: (  # type: ignore[method-assign]
        calls.append(len(images)), real(images, masks, name))
    answer = SegmenterPyfunc(predictor, "v").predict(request_frame())
    assert len(answer) == 3 and calls == [1, 1]  # two supports for three rows


def bad_requests() -> dict[str, tuple[pd.DataFrame, str]]:
    """name -> (request, a pattern of what the error says)."""
    good = request_frame().iloc[:1].reset_index(drop=True)
    small_mask = png(np.full((20, 20), 255, np.uint8))
    jpeg = png(scene(6, 56, 70)[0], "JPEG")
    return {
        "missing column": (good.drop(columns=["support_mask"]),
                           re.escape("missing inputs ['support_mask']")),
        "not base64": (good.assign(query="%%% not base64 %%%"), "row 0 query: not valid base64"),
        "not an image": (good.assign(query=base64.b64encode(b"hello").decode()),
                         "row 0 query: not a readable image \\(cannot identify image file\\)$"),
        "mask of another size": (good.assign(support_mask=small_mask),
                                 "mask is 20x20 but its image is 70x56"),
        "empty mask": (good.assign(support_mask=png(np.zeros((56, 70), np.uint8))),
                       "the mask has no foreground"),
        # MLflow's schema check answers in process; served, the JSON column reaches ours
        "number for an image": (good.assign(query=[7]), "Incompatible input types for column "
                                "query|row 0 query: expected base64 text, got int"),
        "jpeg query is fine but the support is text": (
            good.assign(query=jpeg, support_image="aGVsbG8="),
            "row 0 support_image: not a readable image"),
    }


@pytest.mark.parametrize("case", list(bad_requests()))
def test_bad_request_is_one_clear_error(loaded, case):
    from mlflow.exceptions import MlflowException

    frame, says = bad_requests()[case]
    with pytest.raises(MlflowException) as raised:
        loaded.predict(frame)
    assert re.search(says, raised.value.message)
    assert raised.value.get_http_status_code() == 400


def test_requests_are_checked_without_mlflow_schema_enforcement_too():
    from mlflow.exceptions import MlflowException

    from mlops.pyfunc import MAX_ROWS, SegmenterPyfunc

    model = SegmenterPyfunc(predictor=None, model_version="v")  # never reached
    good = request_frame().iloc[:1]
    cases = {"expected a DataFrame with columns query": good.to_dict("records"),
             "missing column(s) support_image, support_mask": good[["query"]],
             "row 0 support_mask: expected base64 text, got int": good.assign(support_mask=3),
             "row 0 class_name: expected text, got int": good.assign(class_name=5),
             f"expected 1 to {MAX_ROWS} rows": pd.concat([good] * (MAX_ROWS + 1))}
    for says, frame in cases.items():
        with pytest.raises(MlflowException, match=re.escape(says)):
            model.predict(frame)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, frame: pd.DataFrame) -> tuple[int, dict]:
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_until_up(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + SERVE_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer /ping within {SERVE_WAIT} s")


@pytest.fixture(scope="module")
def server(store):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           **store["env"], "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true",  # mlflow runs `uvicorn` found on PATH
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    log = (store["dir"] / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", URI, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=store["dir"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(proc, port)
        yield port
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen) -> None:
    """End the server and the uvicorn it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue


def test_mlflow_models_serve_answers_a_real_request(server, loaded):
    frame = request_frame()
    status, answer = post(server, frame)
    assert status == 200, answer
    rows = answer["predictions"]
    expected = loaded.predict(frame)
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert decode(row["mask"]).shape == decode(frame["query"][i]).shape[:2]
        assert row["mask"] == expected["mask"][i]
        assert row["confidence"] == pytest.approx(expected["confidence"][i])
        assert row["model_version"] == "models:/dinoseg-segmenter/1"


def test_served_bad_requests_are_http_400(server):
    for case, (frame, says) in bad_requests().items():
        status, answer = post(server, frame)
        assert status == 400, case
        assert re.search(says, answer["message"]), (case, answer["message"][-400:])
