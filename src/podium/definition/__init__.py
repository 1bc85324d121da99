"""The WHAT: workflow models, loading, validation and the compiled plan.

Does no I/O beyond reading the file it is asked to load, and imports nothing
of the engine.
"""

from podium.definition.builder import Flow, Ref, StepHandle, define, export_text
from podium.definition.durations import format_duration, parse_duration
from podium.definition.loader import check_input, load_workflow, workflow_from_dict
from podium.definition.models import Compensation, Defaults, RetryPolicy, Step, Workflow
from podium.definition.plan import Plan, PlanNode, compile_plan

__all__ = [
    "Compensation",
    "Defaults",
    "Flow",
    "Plan",
    "PlanNode",
    "Ref",
    "RetryPolicy",
    "Step",
    "StepHandle",
    "Workflow",
    "check_input",
    "compile_plan",
    "define",
    "export_text",
    "format_duration",
    "load_workflow",
    "parse_duration",
    "workflow_from_dict",
]
