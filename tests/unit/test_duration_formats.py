"""Compound durations (``1m30s``) and the one rounded form durations print in."""

from __future__ import annotations

import jsonschema
import pytest

from podium.definition import format_duration, parse_duration, workflow_from_dict
from podium.definition.models import Workflow
from podium.errors import DefinitionError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("2m5.5s", 125.5),
        ("1h30m5s", 5405.0),
        ("1d2h", 93600.0),
        ("1m 30s", 90.0),
        ("1s500ms", 1.5),
        ("1m5ms", 60.005),
    ],
)
def test_compound_durations_add_their_parts(text: str, seconds: float) -> None:
    """Parts written largest unit first add up: 1m30s is 90 seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30s1m", "1m1m", "1h30", "m30s", "1m-30s", "1 m 30"])
def test_compound_durations_out_of_order_or_incomplete_are_rejected(text: str) -> None:
    """A unit twice, units rising, or a trailing bare number is a slip, not a duration."""
    with pytest.raises(ValueError, match=r"not a duration; write e\.g\. .*1m30s"):
        parse_duration(text)


def test_a_compound_duration_is_valid_in_a_workflow_and_in_its_json_schema() -> None:
    """The model and the JSON Schema editors use (`podium schema`) accept the same text."""
    doc = {"name": "w", "defaults": {"timeout": "1m30s"},
           "steps": [{"id": "a", "agent": "x", "timeout": "1h30m",
                      "retry": {"max_attempts": 2, "initial_delay": "2m5.5s",
                                "max_delay": "1h"}}]}
    wf = workflow_from_dict(doc)
    assert wf.steps[0].timeout == 5400.0
    assert wf.defaults.timeout == 90.0
    jsonschema.validate(doc, Workflow.model_json_schema(mode="validation"))
    bad = {**doc, "defaults": {"timeout": "30s1m"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, Workflow.model_json_schema(mode="validation"))
    with pytest.raises(DefinitionError, match="30s1m"):
        workflow_from_dict(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.000166402, "0.17ms"),
        (0.0025, "2.5ms"),
        (0.0123, "12ms"),
        (0.25, "250ms"),
        (0.9996, "1s"),
        (1.5, "1.5s"),
        (12.345, "12.35s"),
        (59.996, "1m"),
        (90.0, "1m30s"),
        (125.5, "2m5.5s"),
        (3600.0, "1h"),
        (5400.0, "1h30m"),
        (5405.2, "1h30m5s"),
    ],
)
def test_format_duration_rounds_for_people(seconds: float, text: str) -> None:
    """At most two decimals, never a float's full digits, units that suit the size."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.000166402, 0.0123, 1.5, 12.345, 90.0, 125.5, 5405.0])
def test_a_printed_duration_reads_back_as_about_the_same(seconds: float) -> None:
    """What Podium prints can be pasted into a workflow file."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=0.05)
