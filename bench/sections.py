"""A bench part that owns one section of docs/benchmarks.md (between its start and end markers)
and one row of the targets table: how it is read, written, kept when the part did not run, and
run on its own (``python bench/<part>.py [--quick] [--no-write] [--out FILE]``).

Used by bench/capture_overhead.py, bench/shadow_overhead.py and bench/stats_api.py (each defines
``PART``), and by bench/run.py's ``finish`` (``make bench``), which regenerates the file and then
writes each part's fresh section, or puts back the last measured one.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway_scale import read_section, write_section

ROOT = Path(__file__).resolve().parent.parent

Result = dict[str, Any]


@dataclass(frozen=True)
class Part:
    name: str  # results key in run.py and the results folder's prefix
    start: str
    end: str
    target_row: str  # the start of its row in the targets table
    run: Callable[..., Result]  # run(out_dir, quick=…)
    render: Callable[[Result], str]  # the section, markers included
    row: Callable[[Result], str]  # its targets-table row
    met: Callable[[Result], bool]

    def read(self, out: Path) -> tuple[str, str] | None:
        """The section and row last written to ``out`` (None if there are none)."""
        return read_section(out, start=self.start, end=self.end, target_row=self.target_row)

    def write(self, out: Path, result: Result) -> None:
        write_section(
            out,
            self.render(result),
            self.row(result),
            start=self.start,
            end=self.end,
            target_row=self.target_row,
        )

    def finish(self, out: Path, result: Result | None, kept: tuple[str, str] | None) -> None:
        """After run.py regenerated ``out``: the fresh section, else the last measured one."""
        if result:
            self.write(out, result)
        elif kept:
            write_section(out, *kept, start=self.start, end=self.end, target_row=self.target_row)

    def main(self, doc: str | None) -> int:
        parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--no-write", action="store_true")
        parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
        args = parser.parse_args()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        out_dir = ROOT / "bench" / "results" / f"{self.name}-{stamp}"
        out_dir.mkdir(parents=True, exist_ok=True)
        result = self.run(out_dir, quick=args.quick)
        (out_dir / f"{self.name}.json").write_text(json.dumps(result, indent=1))
        print(self.render(result))
        if not args.no_write:
            self.write(args.out, result)
        return 0 if self.met(result) else 1
