"""dag.yaml written in Python: load an order, then a fraud check and a tax quote in
parallel, then decide once both are in.

    load ──┬── fraud (slow, 300ms) ──┬── decide
           └── tax   (fast, 20ms)  ──┘

In this folder (podium.yaml beside this file provides the agents):

    podium run python_workflow.py:wf          # or python_workflow:wf, the module's name
    podium export python_workflow.py:wf       # the YAML it stands for (compare dag.yaml)

No ``depends_on`` is written: each step depends on the steps its input reads.
``returns=`` types each handle's output with what its agent returns (the
TypedDicts in agents.py), so ``load.output["subtotal"]`` completes in an IDE
and a misspelt key is a mypy error; it is not part of the definition.
"""

from __future__ import annotations

from agents import Decision, FraudScore, Order, TaxQuote

from podium import Flow

wf = Flow(
    "order-review-py",
    description="Review an order - fraud check and tax quote in parallel, then decide",
    timeout="30s",
    defaults={"timeout": "5s",
              "retry": {"max_attempts": 3, "initial_delay": "200ms", "backoff": 2,
                        "jitter": "full"}},
    input_schema={"type": "object",
                  "properties": {"order_id": {"type": "string", "default": "A-1001"}}},
)

load = wf.step("load", "load-order", returns=Order,
               input={"order_id": wf.input.order_id})
fraud = wf.step("fraud", "fraud-check", returns=FraudScore,
                input={"order": load.output, "delay_ms": 300})
tax = wf.step("tax", "tax-quote", returns=TaxQuote,
              input={"order": load.output, "delay_ms": 20})
decision = wf.step(
    "decide", "decide", returns=Decision,
    input={
        "order_id": load.output["order_id"],
        "fraud": fraud.output,
        "tax": tax.output,
        "max_score": 0.5,
    },
)
wf.output = {
    "decision": decision.output,
    "summary": f"order {load.output['order_id']}: charge {decision.output['charge']}",
}
