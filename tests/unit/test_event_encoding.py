"""Events as stored: the data column's JSON is the same whatever makes it.

``encode_event`` runs a loop over a type's fields for its first events, then code
generated per event type (for speed); these hold both to the plain rule, on every
event type: each field with a value, in the type's order, none that a column keeps
(run_id, ts) nor a step's output.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from podium import events
from podium.events import Event, StepStarted
from podium.store import base
from podium.store.base import encode_event, event_rows

_COLUMNS = {"run_id", "ts", "output", "output_json"}
_TYPES = [cls for cls in vars(events).values()
          if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event]


def _plain(e: Event) -> str:
    data = {}
    for name in e.__struct_fields__:
        value = getattr(e, name)
        if name not in _COLUMNS and value is not None:
            data[name] = value
    return orjson.dumps(data).decode()


def _filled(cls: type[Event], *, none: bool) -> Event:
    kw: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):
        if f.name in ("run_id", "ts"):
            continue
        if none:
            kw[f.name] = None
        else:
            kw[f.name] = f.default if f.default is not msgspec.NODEFAULT else (
                "x" if f.type is str else 1)
    return cls(run_id="r", ts=1.0, **kw)


@pytest.mark.parametrize("cls", _TYPES, ids=lambda c: c.__name__)
def test_every_event_type_encodes_as_the_plain_rule_says(cls: type[Event]) -> None:
    for e in (_filled(cls, none=False), _filled(cls, none=True)):
        assert encode_event(e) == _plain(e)


def test_a_step_start_is_its_fields_in_order() -> None:
    e = StepStarted(run_id="r", ts=1.0, step_id="s1", attempt=2, agent_id="a")
    assert encode_event(e) == '{"step_id":"s1","attempt":2,"agent_id":"a"}'


def test_event_rows_want_a_number_per_event() -> None:
    e = StepStarted(run_id="r", ts=1.0, step_id="s1", attempt=1, agent_id="a")
    assert event_rows([e], [7]) == [("r", 7, "step_started", 1.0, encode_event(e))]
    with pytest.raises(ValueError, match="numbers"):
        event_rows([e, e], [7])


@pytest.mark.parametrize("cls", _TYPES, ids=lambda c: c.__name__)
def test_the_generated_encoder_writes_what_the_first_events_got(cls: type[Event]) -> None:
    full, empty = _filled(cls, none=False), _filled(cls, none=True)
    first = encode_event(full), encode_event(empty)
    for _ in range(base._GENERATE_AFTER + 1):
        encode_event(full)
    assert base._ENCODERS[cls].__name__ == "encode"
    assert base._ENCODERS[cls].__code__.co_filename == "<string>"  # the generated one
    assert (encode_event(full), encode_event(empty)) == first == (_plain(full), _plain(empty))


def test_a_definition_text_too_big_to_keep_is_encoded_again_and_a_small_one_once() -> None:
    """The stores keep the JSON of a run's definition for the next run of the same
    workflow, but not past ``max_chars``: a 100,000-step definition's 6 MB would stay
    for the whole run. Either way the text is the definition's."""
    from podium.store.rows import DefinitionJson

    encode = DefinitionJson(max_chars=100)
    small = {"name": "w", "steps": [{"id": "a"}]}
    big = {"name": "w", "steps": [{"id": f"s{i}"} for i in range(20)]}
    assert encode(small) is encode(small)
    first = encode(big)
    assert orjson.loads(first) == big
    again = encode(big)
    assert again == first
    assert again is not first
