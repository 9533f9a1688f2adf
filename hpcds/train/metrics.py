"""`run_dir/metrics.jsonl`: one JSON object per line, appended as training goes.

    {"kind": "train", "step": 10, "loss": 0.41, "lr": 3e-4, "grad_norm": 1.2,
     "steps_per_s": 3.1, "samples_per_s": 3.1, "seconds": 12.0}
    {"kind": "val", "step": 50, "loss": 0.38, "loss_by_sigma": {"ln_sigma<-2": ...}, ...}

A resumed run first drops the lines of steps after its checkpoint (written by the run that was
interrupted between that checkpoint and its end), so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hpcds.atomic import atomic_write_text, writing


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable ("nan", "inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Keep only records of steps <= `step`; step 0 (a fresh start) keeps none."""
        if not self.path.is_file():
            return
        if step <= 0:
            atomic_write_text(self.path, "")
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        # appended in place: a line cut short by a full disk is dropped on resume
        # (`truncate_after`), like one cut short by a crash
        with writing(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_clean(record)) + "\n")


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
