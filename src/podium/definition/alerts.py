"""Alert rules, escalation policies and receivers, as declared in files.

Rules live in a workflow file (``alerts:``, scoped to that workflow) or in a
global alerts file with the escalation policies and receivers they use.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from podium.definition.durations import Duration, PositiveDuration

__all__ = ["AlertKind", "AlertRule", "AlertsFile", "EscalationLevel", "EscalationPolicy",
           "ReceiverSpec"]

AlertKind = Literal["sla", "waiting", "error_rate", "consecutive_failures", "agent_unhealthy",
                    "no_healthy_agents"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FileModel(_Model):
    """Only in an alerts file: built when one is read, not whenever workflows are."""

    model_config = ConfigDict(defer_build=True)


class AlertRule(_Model):
    """One condition worth telling somebody about; ``name`` makes its alerts' keys stable."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    kind: AlertKind
    after: Duration | None = Field(
        None, description="sla: the limit; waiting: how long a step may wait (an approval...);"
                          " agent_unhealthy / no_healthy_agents: for how long")
    workflow: str | None = Field(None, description="Only runs of this workflow (global rules)")
    step: str | None = Field(None, description="sla of one step; error rate of one step")
    agent: str | None = Field(None, description="Only this agent")
    capability: str | None = Field(None, description="no_healthy_agents: only this capability")
    scope: Literal["agent", "step", "workflow"] = Field(
        "workflow", description="error_rate / consecutive_failures: per agent, step or workflow")
    threshold: float | None = Field(None, gt=0, le=1, description="error_rate: failures / calls")
    window: PositiveDuration = Field(300.0, description="error_rate: sliding window")
    min_calls: int = Field(10, ge=1, description="error_rate: calls needed before it can fire")
    count: int = Field(3, ge=1, description="consecutive_failures: how many in a row")
    severity: str = Field("warning", pattern=r"^[a-z][a-z0-9_-]*$")
    escalation: str | None = Field(None, description="Name of an escalation policy")
    summary: str | None = None

    @model_validator(mode="after")
    def _needs(self) -> AlertRule:
        if self.kind == "sla" and self.after is None:
            raise ValueError("an sla rule needs 'after' (the time limit, e.g. 10m)")
        if self.kind == "waiting" and self.after is None:
            raise ValueError("a waiting rule needs 'after' (how long a step may wait, e.g."
                             " 4h)")
        if self.kind == "error_rate" and self.threshold is None:
            raise ValueError("an error_rate rule needs 'threshold' (e.g. 0.2 for 20%)")
        return self


class EscalationLevel(_FileModel):
    after: Duration = Field(0.0, description="How long unresolved and unacknowledged")
    severity: str = Field("warning", pattern=r"^[a-z][a-z0-9_-]*$")
    receivers: list[str] = Field(min_length=1)


class EscalationPolicy(_FileModel):
    levels: list[EscalationLevel] = Field(min_length=1)
    repeat: PositiveDuration | None = Field(
        None, description="Notify the current level again this often")

    @model_validator(mode="after")
    def _ordered(self) -> EscalationPolicy:
        afters = [lv.after for lv in self.levels]
        if afters != sorted(afters):
            raise ValueError("escalation levels must be in order of 'after'")
        return self


class ReceiverSpec(_FileModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: Literal["log", "webhook", "alertmanager"]
    url: str | None = None
    # The HMAC key is read from this environment variable, never written in a file.
    secret_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveDuration = 5.0
    max_retries: int = Field(5, ge=0, le=100)

    @model_validator(mode="after")
    def _url(self) -> ReceiverSpec:
        if self.type != "log" and not self.url:
            raise ValueError(f"a {self.type} receiver needs 'url'")
        return self


@cache
def default_policy() -> EscalationPolicy:
    """Without a policy: one level, the log, at once."""
    return EscalationPolicy(levels=[EscalationLevel(after=0, severity="warning",
                                                    receivers=["log"])])


class AlertsFile(_FileModel):
    rules: list[AlertRule] = Field(default_factory=list)
    escalation: dict[str, EscalationPolicy] = Field(default_factory=dict)
    default_escalation: str | None = None
    receivers: list[ReceiverSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> AlertsFile:
        names = {r.name for r in self.receivers} | {"log"}
        for pname, policy in self.escalation.items():
            for level in policy.levels:
                for r in level.receivers:
                    if r not in names:
                        raise ValueError(
                            f"escalation '{pname}' names unknown receiver '{r}'"
                            f" (known: {', '.join(sorted(names))})")
        policies = set(self.escalation)
        for rule in self.rules:
            if rule.escalation and rule.escalation not in policies:
                raise ValueError(f"rule '{rule.name}' names unknown escalation"
                                 f" '{rule.escalation}'")
        if self.default_escalation and self.default_escalation not in policies:
            raise ValueError(f"default_escalation '{self.default_escalation}' is not defined")
        return self

    def policy_for(self, rule: AlertRule) -> EscalationPolicy:
        name = rule.escalation or self.default_escalation
        return self.escalation.get(name, default_policy()) if name else default_policy()
