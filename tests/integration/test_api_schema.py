"""The API against its own OpenAPI document, with schemathesis (property-based): every
operation, with generated valid and invalid requests, never answers 5xx, answers
only statuses it documents, refuses what its schema refuses, and its answers match
their documented shape. (A request the schema allows may still be refused: a
definition that is an object but not a workflow, an unknown run; that check is off.)

A real ``podium serve`` on 127.0.0.1 with a real SQLite file and an admin token.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import AGENTS_FILE, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("api-schema")
    db = f"sqlite:///{root / 'podium.db'}"
    made = subprocess.run([sys.executable, "-m", "podium", "token", "create", "--scope",
                           "admin", "--db", db], capture_output=True, text=True, check=True,
                          cwd=root, timeout=60)
    token = made.stdout.strip()
    port = free_port()
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "podium", "serve", "--port", str(port),
                             "--db", db, "--agents", str(AGENTS_FILE)], cwd=root,
                            stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _ready(url), 30, 0.05), Path(root / "serve.log").read_text()
        yield url, token
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_operation_keeps_to_its_schema(served: tuple[str, str]) -> None:
    url, token = served
    api = schemathesis.openapi.from_url(url + "/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    tried = []
    for found in api.get_all_operations():
        operation = found.ok()
        if operation.label == "GET /events":
            # A stream that goes on until the client leaves: a generated call would wait
            # for an end that never comes (tests/integration/test_api_feed.py covers it).
            continue
        tried.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def keeps_to_it(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=url, headers=headers, timeout=30,
                                   excluded_checks=[positive_data_acceptance])

        keeps_to_it()
    assert "POST /runs" in tried
    assert len(tried) >= 15, tried
