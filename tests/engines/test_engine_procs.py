"""The engine-test helpers themselves: ``prefect_api`` rides out a busy Prefect server."""

from __future__ import annotations

import http.server
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.engines.engine_procs import PrefectServer, prefect_api


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers ``codes`` in turn (one per request), then 200 with a JSON body."""

    codes: ClassVar[list[int]] = []
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.seen.append(self.rfile.read(length).decode())
        code = self.codes.pop(0) if self.codes else 200
        self.send_response(code)
        self.end_headers()
        if code == 200:
            self.wfile.write(b'{"id": "run-1"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server(tmp_path: Path) -> Iterator[PrefectServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield PrefectServer(api_url=f"http://127.0.0.1:{httpd.server_port}", home=tmp_path, env={})
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_prefect_api_retries_busy_answers(flaky_server: PrefectServer) -> None:
    # The CI failure this guards: create_flow_run answered 503 once on a loaded box.
    _Flaky.codes, _Flaky.seen = [503, 502], []
    assert prefect_api(flaky_server, "POST", "/x", {"a": 1}) == {"id": "run-1"}
    assert _Flaky.seen == ['{"a": 1}'] * 3


def test_prefect_api_raises_other_errors_at_once(flaky_server: PrefectServer) -> None:
    _Flaky.codes, _Flaky.seen = [404], []
    with pytest.raises(urllib.error.HTTPError, match="404"):
        prefect_api(flaky_server, "POST", "/x", {})
    assert len(_Flaky.seen) == 1


def test_prefect_api_gives_up_after_its_attempts(flaky_server: PrefectServer) -> None:
    _Flaky.codes, _Flaky.seen = [503] * 5, []
    with pytest.raises(urllib.error.HTTPError, match="503"):
        prefect_api(flaky_server, "POST", "/x", {}, attempts=2)
    assert len(_Flaky.seen) == 2
