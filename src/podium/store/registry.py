"""What every store's ``WorkflowRegistry`` shares: the checks before a registration is
written and the refusal of a version that holds other content (and the refusals of
``AgentDirectory``'s joins: an agent id another token holds, a join over the limits).

The dialects only differ in how they write a row once (``ON CONFLICT DO NOTHING``);
the in-memory store does the same with a dictionary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from podium.errors import AgentTaken, ConfigError, TooManyAgents, VersionTaken
from podium.store.base import JoinLimits, workflow_digest
from podium.store.rows import dumps

__all__ = ["Registration", "agent_taken", "prepare_registration", "too_many_agents",
           "version_taken"]


class Registration(NamedTuple):
    name: str
    version: str
    text: str  # the definition as stored
    digest: str


def prepare_registration(name: str, version: int | str,
                         definition: dict[str, Any]) -> Registration:
    """The row to write; ``ConfigError`` if the definition (its sub-workflows embedded)
    is over the file-size limit: a registered workflow is read whole by every caller."""
    # Here, not at the top: the stores import this module, and a store read alone
    # (``podium status``) needs no YAML parser (~10 ms of its start).
    from podium.definition.documents import format_size, max_file_bytes

    text = dumps(definition)
    limit = max_file_bytes()
    if len(text) > limit:
        raise ConfigError(
            f"workflow '{name}' version {version} is {format_size(len(text))} as JSON, over"
            f" the limit of {format_size(limit)} (fix: make it smaller, or raise"
            " PODIUM_MAX_FILE_BYTES)")
    return Registration(name, str(version), text, workflow_digest(definition))


def version_taken(name: str, version: str) -> VersionTaken:
    return VersionTaken(
        f"workflow '{name}' version {version} is registered already with other content;"
        " a registered version never changes (fix: bump version: in the file and register"
        " it again)")


def agent_taken(agent_id: str) -> AgentTaken:
    return AgentTaken(f"agent id {agent_id!r} is registered by another token and alive"
                      " (fix: give this agent another id, or stop the other one)")


def too_many_agents(limits: JoinLimits, mine: int, total: int) -> TooManyAgents:
    """The refusal of a join over ``limits``: the token holds ``mine`` live agents, the
    database ``total``."""
    if mine >= limits.per_token:
        return TooManyAgents(
            f"this token has {mine} live joined agents, its limit of {limits.per_token}"
            " (fix: remove one that left, or raise the limit)",
            limit=limits.per_token, per_token=True)
    return TooManyAgents(
        f"the database has {total} live joined agents, the limit of {limits.total} for all"
        " tokens together (fix: remove one that left, or raise the limit)",
        limit=limits.total, per_token=False)
