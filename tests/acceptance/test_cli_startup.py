"""What a command imports at start-up, and that deferring typer's coercion changed no answer.

``podium status RUN`` reads a run from the store: it needs neither pydantic (typer
built a TypeAdapter for each of its options, given or not; the duration types) nor
the YAML parser (the stores' registry module). Each import cost tens of ms of every
call. Values still go through typer's own coercion, with its messages.
"""

from __future__ import annotations

import json
import sys
import textwrap

from tests.acceptance.podium_cli import Podium

PROBE = textwrap.dedent("""
    import json, sys
    from podium.cli import main
    sys.argv = ["podium", *sys.argv[1:]]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({"code": code, "loaded": sorted(
        m for m in ("pydantic", "yaml", "podium.definition.models") if m in sys.modules)}),
        file=sys.stderr)
""")


def _loaded(podium: Podium, *args: str) -> dict[str, object]:
    import subprocess

    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=podium.cwd,
                          env=podium.env, capture_output=True, text=True, timeout=60,
                          check=False)
    found: dict[str, object] = json.loads(proc.stderr.strip().splitlines()[-1])
    return found


def test_status_imports_neither_pydantic_nor_yaml(podium: Podium) -> None:
    ran = podium("run", "ok.yaml", "-i", "who=ann", "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out)["run_id"]
    for args in ((run_id,), (run_id, "--json"), (run_id[:6], "--db", podium.db_url, "-v")):
        probe = _loaded(podium, "status", *args)
        assert probe == {"code": 0, "loaded": []}, (args, probe)


def test_a_run_coerces_only_the_options_given(podium: Podium) -> None:
    probe = _loaded(podium, "run", "ok.yaml", "-i", "who=ann", "--json")
    assert probe["code"] == 0
    assert "podium.definition.models" in probe["loaded"]  # type: ignore[operator]


def test_values_still_get_typers_coercion_and_messages(podium: Podium) -> None:
    bad = podium("run", "ok.yaml", "--metrics-port", "abc")
    assert bad.code == 2
    assert ("Invalid value for '--metrics-port': Input should be a valid integer, unable to"
            " parse string as an integer") in bad.err
    as_json = podium("run", "ok.yaml", "--metrics-port", "abc", "--json")
    assert as_json.code == 2
    assert json.loads(as_json.out)["error"]["type"] == "usage"
    missing = podium("status")
    assert missing.code == 2
    assert "Missing argument 'RUN'" in missing.err
    # A list option and a path, given: coerced by typer as before.
    ran = podium("run", "ok.yaml", "-i", "who=ann", "-i", "who=bob", "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["output"] == {"greeting": "hi bob"}
