"""Workflow overhead: what running the ``vehiculos`` pipeline as a workflow costs beyond its tasks.

The shipped, unchanged AWS definition (retrieve → inference → valid confidence → confident)
runs in process with its mapping file, against stub actions of known cost: ``store.get``
returns a fixed ~64 KB base64 image and ``model.invoke`` fixed probabilities, both after
``await asyncio.sleep(0)``. The baseline calls the same two stub actions directly and applies
the threshold in Python: the pipeline hand-written. The difference is the workflow's
overhead — everything but the model call (and the object read):

- **interpreter**: the state machine (paths, Parameters, ``lambda:invoke`` emulation and the
  mapping, Choice, history events kept in memory), no persistence;
- **service**: :class:`mlgate.workflows.service.WorkflowService` as the server runs it, with
  the execution row, its input/output and its whole event history written to the registry
  database (SQLite by default, or ``--database-url``), in the two transactions of a sync run.

Executions run one at a time (latency, not throughput). Writes the "Workflow overhead"
section of docs/benchmarks.md between its markers.

    .venv/bin/python bench/workflow_overhead.py [--executions 2000] [--database-url URL] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mlgate.repository import Repository
from mlgate.workflows.actions import Actions
from mlgate.workflows.engine import Interpreter
from mlgate.workflows.mapping import parse_mapping
from mlgate.workflows.service import WorkflowService
from mlgate.workflows.spec import parse_definition
from mlgate.workflows.store import WorkflowStore
from mlgate_services.vehiculos.service import WORKFLOWS_DIR

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START = "<!-- workflow-overhead:start -->"
END = "<!-- workflow-overhead:end -->"
THRESHOLD = 0.75
INPUT = {"s3_bucket": "vehiculos-fotos", "s3_key": "motos/moto.jpg"}
IMAGE = base64.b64encode(os.urandom(48 * 1024)).decode()  # ~64 KB of base64, like a 640x480 JPEG
SMALL = "QUJD"  # a token payload: what the workflow machinery costs by itself
STATES = 4  # retrieve, inference, valid confidence, confident


class StubActions(Actions):
    """The two leaves at a known, tiny cost: one event-loop turn each, no I/O."""

    def __init__(self, image: str = IMAGE) -> None:
        super().__init__(dataplane=None, buckets=None)
        self.image = image

    async def store_get(self, params: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {
            "body": self.image,
            "content_type": "image/jpeg",
            "size": len(self.image) * 3 // 4,
            "sha256": "0" * 64,
            "s3_bucket": params["s3_bucket"],
            "s3_key": params["s3_key"],
        }

    async def model_invoke(
        self, model: str, payload: Any, *, version: Any = None, as_lambda: bool = False
    ) -> Any:
        await asyncio.sleep(0)
        return {"inferences": [0.02, 0.78], "top": []}


async def direct(actions: StubActions) -> dict[str, Any]:
    """The same pipeline, hand-written: the baseline."""
    got = await actions.store_get(INPUT)
    event = {"image_data": got["body"], "s3_bucket": got["s3_bucket"], "s3_key": got["s3_key"]}
    inferences = (await actions.model_invoke("vehiculos", event))["inferences"]
    if max(inferences) < THRESHOLD:
        raise RuntimeError("THRESHOLD_CONFIDENCE_NOT_MET")
    return {**event, "inferences": inferences}


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(min(200, n)):  # warm-up
        await fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return samples


def us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1] * 1e6


async def measure(n: int, database_url: str | None, image: str = IMAGE) -> dict[str, Any]:
    definition = json.loads((WORKFLOWS_DIR / "vehiculos.asl.json").read_text())
    mapping_doc = json.loads((WORKFLOWS_DIR / "mapping.json").read_text())
    machine = parse_definition(definition)
    mapping = parse_mapping(mapping_doc)
    actions = StubActions(image)
    invoke = actions.invoker(mapping)
    events: list[Any] = []

    async def baseline() -> Any:
        return await direct(actions)

    async def interpreted() -> Any:
        events.clear()
        result = await Interpreter(machine, invoke=invoke, on_event=events.append).run(INPUT)
        assert result.status == "SUCCEEDED", result
        return result

    base = await timed(baseline, n)
    interp = await timed(interpreted, n)
    event_count = len(events)

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        repo = Repository.open(url)
        try:
            service = WorkflowService(WorkflowStore(repo.engine), actions=actions, flush_interval_s=0.25)
            service.deploy_sync("bench-vehiculos", definition, mapping=mapping_doc)
            await service.start()

            async def served() -> Any:
                record = await service.start_execution("bench-vehiculos", INPUT)
                assert record.status == "SUCCEEDED", record
                return record

            svc = await timed(served, n)
            await service.stop()
            backend = repo.engine.dialect.name
        finally:
            repo.close()
    return {
        "n": n,
        "events": event_count,
        "direct": base,
        "interpreter": interp,
        "service": svc,
        "backend": backend,
    }


def render(big: dict[str, Any], small: dict[str, Any]) -> str:
    rows = []
    for payload, r in (("64 KB image", big), ("4-byte token", small)):
        base = us(r["direct"])
        rows.append(
            f"| direct calls (baseline) | {payload} | {base:,.0f} | {p99(r['direct']):,.0f} | — | — |"
        )
        for label, key in (
            ("interpreter, in memory", "interpreter"),
            (f"service, {r['backend']}", "service"),
        ):
            total = us(r[key])
            overhead = total - base
            rows.append(
                f"| {label} | {payload} | {total:,.0f} | {p99(r[key]):,.0f} | {overhead:,.0f} "
                f"| {overhead / STATES:,.0f} |"
            )
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            START,
            "## Workflow overhead",
            "",
            "What running the `vehiculos` pipeline as a workflow costs beyond its tasks: the shipped AWS",
            "definition and mapping (retrieve → inference → valid confidence → confident: 4 states,",
            f"{big['events']} history events) against stub actions of known cost (one event-loop turn each),",
            "versus the same two calls hand-written. *Interpreter* is the state machine alone (paths,",
            "Parameters, the `lambda:invoke` emulation and the mapping, Choice, events kept in memory);",
            "*service* is `WorkflowService` as the server runs a sync execution: the execution row, then",
            "the whole history and the end in one more transaction. Medians and p99 over",
            f"{big['n']:,} sequential executions each; `bench/workflow_overhead.py`.",
            "",
            "| path | payload | µs per execution | p99 µs | overhead µs | overhead µs per state |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
            "",
            "The history keeps every state's input and output, as Step Functions' does, so the image is",
            "written about ten times per execution: with image-sized payloads the database write is most",
            "of the overhead. Against the classifier's own latency (tens of milliseconds for",
            "EfficientNet-Lite3 on CPU) and the original deployment's < 2 s end to end, the workflow layer",
            "is a small fraction. Measured on a shared machine under other load: read the p99 with care.",
            "",
            f"Python {platform.python_version()}, {platform.system()} {cpu}, {os.cpu_count()} CPUs.",
            END,
        ]
    )


def write_section(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    big = asyncio.run(measure(args.executions, args.database_url, IMAGE))
    small = asyncio.run(measure(args.executions, args.database_url, SMALL))
    section = render(big, small)
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
