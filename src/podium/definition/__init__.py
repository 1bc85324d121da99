"""The WHAT: workflow models, loading, validation and the compiled plan.

Does no I/O beyond reading the file it is asked to load, and imports nothing
of the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from podium.lazy import lazy_exports

if TYPE_CHECKING:
    from podium.definition.builder import Flow, Ref, StepHandle, define, export_text
    from podium.definition.durations import format_duration, parse_duration
    from podium.definition.loader import check_input, load_workflow, workflow_from_dict
    from podium.definition.models import Compensation, Defaults, RetryPolicy, Step, Workflow
    from podium.definition.plan import Plan, PlanNode, compile_plan

# Imported when first asked for (PEP 562): a module that needs one leaf
# (``podium.definition.durations`` in ``podium status``) does not load the models,
# the YAML loader and the builder with this package.
_EXPORTS: dict[str, str] = {
    "Compensation": "podium.definition.models",
    "Defaults": "podium.definition.models",
    "Flow": "podium.definition.builder",
    "Plan": "podium.definition.plan",
    "PlanNode": "podium.definition.plan",
    "Ref": "podium.definition.builder",
    "RetryPolicy": "podium.definition.models",
    "Step": "podium.definition.models",
    "StepHandle": "podium.definition.builder",
    "Workflow": "podium.definition.models",
    "check_input": "podium.definition.loader",
    "compile_plan": "podium.definition.plan",
    "define": "podium.definition.builder",
    "export_text": "podium.definition.builder",
    "format_duration": "podium.definition.durations",
    "load_workflow": "podium.definition.loader",
    "parse_duration": "podium.definition.durations",
    "workflow_from_dict": "podium.definition.loader",
}



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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
