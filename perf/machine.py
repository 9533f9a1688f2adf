"""What every benchmark record notes about the machine, and how it is written.

    from machine import peak_rss_gib, write_record
    write_record("train", rows, tag="-threads1", config="tiny")  # perf/results/train-<date>-threads1.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_gib() -> float:
    """The process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine_info() -> dict:
    """CPU, cores, memory, GPU (if torch sees one), versions, and the 1-minute load average:
    on a shared 2-core machine other processes change CPU timings severalfold."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1),
            "gpu": None, "python": sys.version.split()[0], "os": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return info


def write_record(kind: str, rows: list[dict], tag: str = "", **extra) -> Path:
    """perf/results/<kind>-<yyyymmdd><tag>.json with the date, command, machine and rows."""
    stamp = datetime.now(timezone.utc)
    out = RESULTS / f"{kind}-{stamp:%Y%m%d}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": stamp.isoformat(timespec="seconds"),
                               "command": " ".join(sys.argv), **extra,
                               "machine": machine_info(), "rows": rows}, indent=2) + "\n")
    print(f"recorded {out}")
    return out
