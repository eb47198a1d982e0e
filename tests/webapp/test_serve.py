"""Serving options on a live app (loopback): basic auth from the environment, upload limit."""

from __future__ import annotations

import http.client
import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

import pytest

from dinoseg.io import InputError
from webapp.app import build_app
from webapp.serve import MAX_FILE_SIZE, auth_from_env, launch


def test_auth_from_env():
    assert auth_from_env({}) is None
    assert auth_from_env({"DINOSEG_DEMO_AUTH": "ann:s3cret:x"}) == ("ann", "s3cret:x")
    for bad in ("ann", "ann:", ":pw"):
        with pytest.raises(InputError, match="user:password"):
            auth_from_env({"DINOSEG_DEMO_AUTH": bad})


def _status(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _upload(port: int, size: int, cookie: str) -> int | None:
    """POST a file of ``size`` bytes to Gradio's upload route; None if the server hung up."""
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + b"0" * size + b"\r\n--b--\r\n")  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "multipart/form-data; boundary=b", "Cookie": cookie}
        conn.request("POST", "/gradio_api/upload", body, headers)
        return conn.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def test_live_app_binds_loopback_with_auth_and_an_upload_limit(tiny_backend, monkeypatch):
    monkeypatch.setenv("DINOSEG_DEMO_AUTH", "ann:s3cret")
    demo = build_app(tiny_backend, examples=False)
    launch(demo, port=_free_port(), block=False, quiet=True)
    try:
        base = demo.local_url.rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        assert _status(base + "/config") == 401  # nothing but the login page without a login
        login = urllib.parse.urlencode({"username": "ann", "password": "s3cret"}).encode()
        wrong = urllib.parse.urlencode({"username": "ann", "password": "nope"}).encode()
        assert _status(base + "/login", wrong) == 400
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        assert opener.open(base + "/login", login, timeout=30).status == 200
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        port = int(base.rsplit(":", 1)[1])
        assert MAX_FILE_SIZE == "25mb"
        assert _upload(port, 1024, cookie) == 200
        assert _upload(port, 26 * 1024 * 1024, cookie) in (413, None)  # refused, never stored
    finally:
        demo.close()


def _free_port() -> int:
    from tests.workers.conftest import free_port

    return free_port()
