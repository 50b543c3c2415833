"""The demo package: fan-out by emit, fan-in by dependencies, an artifact, records, a flaky step
that succeeds on its second attempt, and an input flag that makes a step fail for good."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from workflow import Package, RetryPolicy, RunBuilder, StepContext, permanent, require, retryable

log = logging.getLogger("workflow.step.demo")

demo = Package(
    "demo",
    display_name="Demo: word report",
    description="Splits a text into chunks, counts words in parallel, joins the counts into a report.",
)


@dataclass(frozen=True)
class DemoInput:
    """Count words in a text, in parallel chunks."""

    text: str = "the quick brown fox jumps over the lazy dog " * 8
    chunks: int = 4
    fail_permanently: bool = False  # make the 'publish' step fail with a permanent error
    work_seconds: float = 0.2  # how long each count step pretends to work


@demo.entrypoint
def start(run: RunBuilder, params: DemoInput) -> None:
    run.set_metadata("chunks", str(params.chunks))
    run.step("fetch-dictionary", {}, kind="demo.flaky",
             retry=RetryPolicy(max_attempts=3, initial_backoff=timedelta(seconds=1)))
    run.step("split", {"text": params.text, "chunks": params.chunks, "work_seconds": params.work_seconds,
                       "fail_permanently": params.fail_permanently}, kind="demo.split")


@dataclass(frozen=True)
class SplitInput:
    text: str
    chunks: int
    work_seconds: float = 0.2
    fail_permanently: bool = False


@demo.executor("demo.split")
def split(step: StepContext, params: SplitInput) -> dict:
    words = params.text.split()
    size = max(1, -(-len(words) // max(params.chunks, 1)))
    parts = [words[i : i + size] for i in range(0, len(words), size)]
    counts = [step.emit(None, {"words": part, "work_seconds": params.work_seconds}, kind="demo.count") for part in parts]
    # The join depends on every count: fan-in on children emitted at run time.
    joined = step.emit("join", {"parts": [c.id for c in counts]}, kind="demo.join", depends_on=require(*counts))
    # Children may also depend on steps the entrypoint made: the report waits for the dictionary too.
    report = step.emit("report", {}, kind="demo.report", depends_on=require(joined, "fetch-dictionary"))
    step.emit("publish", {"fail": params.fail_permanently}, kind="demo.publish", depends_on=require(report))
    log.info("split %d words into %d chunks", len(words), len(parts))
    return {"words": len(words), "chunks": len(parts)}


@dataclass(frozen=True)
class CountInput:
    words: list[str] = field(default_factory=list)
    work_seconds: float = 0.2


@demo.executor("demo.count")
def count(step: StepContext, params: CountInput) -> dict:
    time.sleep(params.work_seconds)
    counts: dict[str, int] = {}
    for word in params.words:
        counts[word] = counts.get(word, 0) + 1
    return counts


@demo.executor("demo.join")
def join(step: StepContext, params: dict) -> dict:
    total: dict[str, int] = {}
    for part in params["parts"]:
        for word, n in step.dependency_data(part).items():
            total[word] = total.get(word, 0) + n
    for word, n in total.items():
        step.record("word_counts", word, {"count": n, "run": step.step.run_id})
    return total


@demo.executor("demo.flaky")
def flaky(step: StepContext) -> dict:
    if step.attempt < 2:
        log.warning("dictionary service unavailable on attempt %d", step.attempt)
        raise retryable("dictionary_unavailable", "the dictionary service answered 503; will retry")
    return {"dictionary": "en", "attempt": step.attempt}


@demo.executor("demo.report")
def report(step: StepContext) -> dict:
    totals = step.dependency_data("join")
    rows = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    csv = "word,count\n" + "".join(f"{w},{n}\n" for w, n in rows)
    step.artifact("word-counts.csv", "text/csv", csv)
    step.artifact("summary.json", "application/json", json.dumps({"distinct": len(rows), "top": rows[:3]}, indent=2))
    return {"distinct_words": len(rows), "top": rows[0][0] if rows else None}


@demo.executor("demo.publish")
def publish(step: StepContext, params: dict) -> dict:
    if params.get("fail"):
        raise permanent("publish_rejected", "the publishing target refused the report (fail_permanently was set)")
    return {"published": True}
