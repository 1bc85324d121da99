"""Agents for the example workflows: plain Python functions.

Each takes one ``task`` (``run_id``, ``step_id``, ``attempt``,
``idempotency_key``, ``capability``, ``input``) and returns JSON data; raising
fails the attempt. ``async def`` agents run on the engine's event loop, plain
``def`` agents in a worker thread. ``podium.yaml`` beside this file registers
them (``python: agents:fetch``); the loader puts this folder on ``sys.path``.

Everything is in memory and takes at most a few hundred milliseconds, so the
examples run anywhere and double as test fixtures.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections import Counter
from typing import Any, TypedDict

from podium import InvalidInput, Unavailable

# --- sequential.yaml: fetch → clean → summarise ------------------------------

PAGES = {
    "https://example.com/podium": (
        "<html><head><title>Podium in five minutes</title></head><body>"
        "<h1>Podium in five minutes</h1>"
        "<p>Podium runs workflows of agents. Each step is handed to an agent chosen by "
        "capability, and every result is checkpointed before the next step starts.</p>"
        "<p>When an agent fails, Podium retries it with backoff and jitter. When the "
        "process crashes, <em>podium resume</em> carries on from the last committed "
        "step &mdash; nothing that succeeded runs twice.</p>"
        "<script>trackVisit()</script></body></html>"
    ),
    "https://example.com/retries": (
        "<html><head><title>Retrying well</title></head><body>"
        "<p>Retry transient errors, not bad input. Back off exponentially, add jitter "
        "so clients do not retry in lockstep, and cap the delay.</p>"
        "<p>Give every attempt a timeout and every step a deadline.</p></body></html>"
    ),
}

_STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "each", "every", "for", "from",
    "in", "is", "it", "its", "not", "of", "on", "or", "so", "that", "the", "to", "when", "with",
))


async def fetch(task: Any) -> dict[str, Any]:
    """fetch: download a page (from a small in-memory web, after a network-like pause)."""
    url = task.input["url"]
    await asyncio.sleep(0.05)
    page = PAGES.get(url)
    if page is None:
        raise InvalidInput(f"404 for {url}; known pages: {', '.join(sorted(PAGES))}")
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    return {"url": url, "title": title.group(1) if title else url, "html": page,
            "bytes": len(page.encode())}


def clean(task: Any) -> dict[str, Any]:
    """clean-text: strip scripts and tags, decode entities, collapse whitespace."""
    raw = task.input["html"]
    raw = re.sub(r"<(script|style|head)\b.*?</\1>", " ", raw, flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    text = re.sub(r"\s+", " ", text).strip()
    return {"text": text, "words": len(text.split())}


def summarise(task: Any) -> dict[str, Any]:
    """summarise: the first sentences and the most frequent meaningful words."""
    params = task.input
    text: str = params["text"]
    title = params.get("title")
    if title and text.startswith(title):
        text = text[len(title):].lstrip()  # the page's heading repeats its title
    sentences = re.split(r"(?<=[.!?])\s+", text)
    n = int(params.get("max_sentences") or 2)
    words = [w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS and len(w) > 2]
    return {
        "title": title,
        "url": params.get("url"),
        "summary": " ".join(sentences[:n]),
        "keywords": [w for w, _ in Counter(words).most_common(5)],
        "words": len(text.split()),
    }


# --- parallel.yaml: independent lookups -------------------------------------

REFERENCE_DATA: dict[str, dict[str, Any]] = {
    "weather": {"Lisbon": {"forecast": "sunny", "high_c": 24, "low_c": 15}},
    "fx": {"EUR/USD": {"rate": 1.08, "as_of": "2024-05-02"}},
    "timezone": {"Lisbon": {"tz": "Europe/Lisbon", "utc_offset": "+01:00"}},
    "holidays": {"PT-2024-06": {"dates": ["2024-06-10", "2024-06-13"]}},
}
_LATENCY_S = {"weather": 0.15, "fx": 0.05, "timezone": 0.02, "holidays": 0.1}


async def lookup(task: Any) -> dict[str, Any]:
    """reference-data: one key of one data set, with that service's usual latency."""
    dataset, key = task.input["dataset"], task.input["key"]
    table = REFERENCE_DATA.get(dataset)
    if table is None:
        raise InvalidInput(f"unknown data set {dataset!r}; known: {', '.join(REFERENCE_DATA)}")
    await asyncio.sleep(_LATENCY_S[dataset])
    if key not in table:
        raise InvalidInput(f"{dataset} has no entry {key!r}")
    return {"dataset": dataset, "key": key, **table[key]}


# --- dag.yaml: a diamond with a slow and a fast branch ----------------------

ORDERS: dict[str, dict[str, Any]] = {
    "A-1001": {
        "customer": "c-42",
        "country": "PT",
        "items": [
            {"sku": "KB-MECH", "qty": 1, "price": 89.0},
            {"sku": "MOUSE-W", "qty": 2, "price": 19.99},
        ],
        "new_customer": False,
        "shipping_matches_billing": True,
    },
}
TAX_RATES = {"PT": 0.23, "DE": 0.19, "US": 0.0}


# What the dag agents return, typed so that python_workflow.py's step outputs
# complete in an IDE (``load.output["subtotal"]``) and are checked by mypy.
class Order(TypedDict):
    order_id: str
    customer: str
    country: str
    items: list[dict[str, Any]]
    new_customer: bool
    shipping_matches_billing: bool
    subtotal: float


class FraudScore(TypedDict):
    score: float
    model: str


class TaxQuote(TypedDict):
    rate: float
    tax: float
    total: float


class Decision(TypedDict):
    order_id: str
    approved: bool
    charge: float
    reason: str


async def load_order(task: Any) -> Order:
    """load-order: the order and its subtotal."""
    order_id = task.input["order_id"]
    order = ORDERS.get(order_id)
    if order is None:
        raise InvalidInput(f"no order {order_id!r}")
    subtotal = round(sum(i["qty"] * i["price"] for i in order["items"]), 2)
    return Order(order_id=order_id, **order, subtotal=subtotal)


async def fraud_check(task: Any) -> FraudScore:
    """fraud-check: the slow branch (a model call, say); scores 0 (fine) to 1."""
    order = task.input["order"]
    await asyncio.sleep(task.input.get("delay_ms", 0) / 1000)
    score = 0.05
    if order["new_customer"]:
        score += 0.3
    if not order["shipping_matches_billing"]:
        score += 0.4
    if order["subtotal"] > 1000:
        score += 0.2
    return {"score": round(score, 2), "model": "rules-v2"}


async def tax_quote(task: Any) -> TaxQuote:
    """tax-quote: the fast branch; VAT for the order's country."""
    order = task.input["order"]
    await asyncio.sleep(task.input.get("delay_ms", 0) / 1000)
    rate = TAX_RATES.get(order["country"])
    if rate is None:
        raise InvalidInput(f"no tax rate for country {order['country']!r}")
    tax = round(order["subtotal"] * rate, 2)
    return {"rate": rate, "tax": tax, "total": round(order["subtotal"] + tax, 2)}


async def decide(task: Any) -> Decision:
    """decide: join both branches into one decision."""
    fraud, tax = task.input["fraud"], task.input["tax"]
    approved = fraud["score"] < task.input.get("max_score", 0.5)
    return {
        "order_id": task.input["order_id"],
        "approved": approved,
        "charge": tax["total"] if approved else 0.0,
        "reason": f"fraud score {fraud['score']}" + (" under" if approved else " over")
        + f" the limit {task.input.get('max_score', 0.5)}",
    }


# --- flaky.yaml: fails twice, then succeeds ---------------------------------


async def flaky_quote(task: Any) -> dict[str, Any]:
    """fx-quote: a service that answers 503 to the first ``fail_times`` attempts.

    Deterministic (it looks at ``task.attempt``), so the example always shows
    two failed attempts, two backoff waits and a success on attempt 3.
    """
    fail_times = int(task.input.get("fail_times", 2))
    if task.attempt <= fail_times:
        raise Unavailable(
            f"quote service answered 503 Service Unavailable (attempt {task.attempt})"
        )
    pair = task.input["pair"]
    return {"pair": pair, "rate": REFERENCE_DATA["fx"][pair]["rate"], "attempt": task.attempt}


async def publish(task: Any) -> dict[str, Any]:
    """publish: pretend to post the quote somewhere; echo what was published."""
    quote = task.input["quote"]
    return {"published": f"{quote['pair']} = {quote['rate']}", "channel": "#fx-rates"}


# --- failing.yaml: a non-retryable error, and a downstream step skipped -----

CARDS: dict[str, dict[str, str]] = {"tok_visa_4242": {"last4": "4242", "expires": "2023-01"}}


def charge(task: Any) -> dict[str, Any]:
    """payment: charge a card; an expired card is bad input, so retrying cannot help."""
    card = CARDS.get(task.input["card"])
    if card is None:
        raise InvalidInput(f"unknown card token {task.input['card']!r}")
    if card["expires"] < task.input["date"][:7]:
        raise InvalidInput(
            f"card ending {card['last4']} expired in {card['expires']}; "
            "ask the customer for another card"
        )
    return {"charged": task.input["amount"], "card": card["last4"]}


async def send_receipt(task: Any) -> dict[str, Any]:
    """email: send the receipt (never reached in failing.yaml)."""
    return {"sent_to": task.input["email"], "amount": task.input["payment"]["charged"]}
