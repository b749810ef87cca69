"""Closed by default: the worker's web server on loopback, user pages behind the bearer token,
no Faust table view, a cap on live-feed subscribers; settings that would open it refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from stream.settings import Settings
from tests.stream.conftest import consume, produce
from tests.stream.helpers import raw_messages
from topics.specs import EVENTS, UPDATES

TOKEN = "a-test-token"


def status_of(port: int, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            if path.endswith("/stream"):
                return response.status  # a live feed: the status line is the answer
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_server_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ValueError, match="SHIFTWATCH_API_TOKEN"):
        Settings(web_bind="0.0.0.0")
    assert Settings(web_bind="0.0.0.0", api_token=TOKEN).web_bind == "0.0.0.0"
    assert Settings().web_bind == "127.0.0.1", "loopback by default"
    with pytest.raises(ValueError, match="MAX_EVENT_BYTES"):
        Settings(max_event_bytes=10**6)  # its dead letters could not copy it whole


@pytest.mark.kafka
def test_user_pages_need_the_token_and_nothing_else_serves_rows(kafka_bootstrap, worker_factory, stream_log) -> None:
    stream = raw_messages(stream_log.first_users(3))
    worker = worker_factory(api_token=TOKEN, sse_subscribers="1").start()
    produce(kafka_bootstrap, EVENTS.name, stream)
    assert len(consume(kafka_bootstrap, UPDATES.name, len(stream), worker=worker)) == len(stream)
    port, user = worker.web_port, stream[0][0].decode()
    for path in (f"/users/{user}/interests", f"/users/{user}/timeline", "/shifts/recent"):
        assert status_of(port, path) == 401, path
        assert status_of(port, path, "a-wrong-token") == 401, path
        assert status_of(port, path, TOKEN) == 200, path
    assert status_of(port, "/shifts/stream") == 401
    for path in ("/metrics", "/healthz", "/readyz", "/stats", "/categories", "/dashboard"):
        assert status_of(port, path) == 200, path
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        stats = json.loads(response.read(), parse_constant=lambda name: pytest.fail(f"/stats holds {name}: not JSON"))
    assert stats["latency_buckets"][-1][0] is None and stats["latency_buckets"][-1][1] == len(stream)
    assert status_of(port, "/table/users/") == 404, "Faust's table view is off"

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/shifts/stream", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as first:
        assert first.status == 200 and first.readline() == b": connected\n"
        assert status_of(port, "/shifts/stream", TOKEN) == 503, "one subscriber at most"
    body = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/users/{user}/interests", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
            timeout=10,
        ).read()
    )
    assert body["events"] == sum(1 for key, _ in stream if key.decode() == user)
    assert not worker.exited()
