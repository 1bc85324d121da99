"""The WHO: the Agent protocol, transports and the registry that picks agents."""

from podium.agents.base import Agent, HealthReport, Task
from podium.agents.python import PythonAgent, agent, load_callable
from podium.agents.registry import AgentRegistry, Lease

__all__ = ["Agent", "AgentRegistry", "HealthReport", "Lease", "PythonAgent", "Task", "agent",
           "load_callable"]
