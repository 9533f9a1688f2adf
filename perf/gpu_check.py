"""The first-GPU check (run through perf/gpu_check.sh): every step the 4.4 km path needs on a GPU,
in one command of at most `--budget` seconds (default 480), each step logged and timed.

    bash perf/gpu_check.sh                  # on a GPU machine → perf/results/gpu-<date>.{md,json}
    bash perf/gpu_check.sh --dry-run        # on a CPU: the same steps at toy sizes (CI)
    bash perf/gpu_check.sh --out DIR        # the record (and the step logs) into DIR

Steps (a failing step is recorded and the next one still runs; exit status 1 if any failed):
  device   nvidia-smi and what torch sees (name, memory, capability, versions)
  build    the CUDA kernels with CMake + nvcc (sm_90) into build/gpu, then used through
           HPCDS_NATIVE_DIR by every later step (a dry run only configures the CPU target)
  tests    pytest -m gpu tests/gpu: Triton and CUDA kernel parity with the float64 reference
           (float32 and bf16, gradients), the model per backend, a sampler step, a DeepSpeed
           ZeRO-1 bf16 step, the MPI halo transport on one device
  kernels  perf/kernels.py at the full shard sizes, every backend (--record); the window
           attention again in bf16 (--tag=-window-bf16)
  shard    perf/gpu_shard.py: one 48-way 4km shard's forward + backward and sampler step per
           backend in bf16, and the planner's memory estimate against max_memory_allocated
Without a GPU it refuses (exit status 2) unless --dry-run: then `build` only configures the
CPU target, `tests` collects the GPU tests, and `kernels` / `shard` run at toy sizes on the CPU.
Every step's output goes to DIR/gpu-check.log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "perf" / "results"
STEPS = ("device", "build", "tests", "kernels", "shard")


def has_gpu(python: str) -> tuple[bool, str]:
    """(a CUDA device is usable, why not)."""
    if shutil.which("nvidia-smi") is None:
        return False, "no nvidia-smi on PATH"
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != "True":
        return False, f"torch sees no CUDA device ({probe.stderr.strip()[-200:] or 'False'})"
    return True, ""


def commands(dry: bool, python: str, out: Path) -> dict[str, list[list[str]]]:
    build = REPO / "build" / "gpu"
    cmake = ["cmake", "-S", str(REPO), "-B", str(build), f"-DPython_EXECUTABLE={python}",
             f"-DHPCDS_CUDA={'OFF' if dry else 'ON'}"]
    targets = ["_hpcds_native", "_hpcds_native_cuda"]
    probe = ("import torch, json; d = torch.cuda.get_device_properties(0) if "
             "torch.cuda.is_available() else None; print(json.dumps(dict(torch=torch.__version__,"
             " cuda=torch.version.cuda, device=getattr(d, 'name', None), memory_gib=round("
             "d.total_memory / 2**30, 1) if d else None, capability=f'{d.major}.{d.minor}' if d "
             "else None, count=torch.cuda.device_count())))")
    return {
        "device": ([] if dry else [["nvidia-smi"]]) + [[python, "-c", probe]],
        "build": [cmake] + ([] if dry else [["cmake", "--build", str(build), "--target",
                                             *targets, f"-j{os.cpu_count() or 2}"]]),
        "tests": [[python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                   "tests/gpu", *(["--collect-only"] if dry else ["-rs"])]],
        "kernels": [[python, "perf/kernels.py", *(
            ["--scale", str(1 / 8192), "--warmup", "0", "--repeat", "1",
             "--backends", "reference,native"] if dry else ["--repeat", "10", "--record"])],
                    # the window attention also in bf16, the dtype training runs it in
                    [python, "perf/kernels.py", "--kernels", "window", "--dtype", "bfloat16", *(
                        ["--scale", str(1 / 8192), "--warmup", "0", "--repeat", "1",
                         "--backends", "reference,native"] if dry
                        else ["--repeat", "10", "--record", "--tag=-window-bf16"])]],
        "shard": [[python, "perf/gpu_shard.py", "--json", str(out / "gpu-shard.json"),
                   *(["--dry-run", "--repeat", "1", "--backends", "native,reference"]
                     if dry else [])]],
    }


def run_step(name: str, cmds: list[list[str]], env: dict, deadline: float, log: Path) -> dict:
    t0, rc, text = time.monotonic(), 0, []
    for cmd in cmds:
        left = deadline - time.monotonic()
        if left < 5:
            rc = 124
            text.append(f"[gpu_check] out of time before: {' '.join(cmd)}\n")
            break
        try:
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=left)
            rc, out = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as err:
            rc, out = 124, f"{err.stdout or ''}{err.stderr or ''}[gpu_check] timed out\n"
            out = out if isinstance(out, str) else out.decode(errors="replace")
        text.append(f"$ {' '.join(cmd)}\n{out}")
        if rc:
            break
    with log.open("a") as f:
        f.write(f"==== {name}\n" + "".join(text))
    seconds = time.monotonic() - t0
    tail = "".join(text)[-1500:]
    print(f"[gpu_check] {name:<8} {'ok' if rc == 0 else f'FAILED (rc {rc})':<14} {seconds:6.1f} s",
          flush=True)
    if rc:
        print(tail, flush=True)
    return dict(step=name, rc=rc, seconds=round(seconds, 1), tail=tail)


def write_report(out: Path, steps: list[dict], dry: bool) -> tuple[Path, Path]:
    stamp = datetime.now(timezone.utc)
    name = f"gpu-{stamp:%Y%m%d}{'-dry' if dry else ''}"
    shard = out / "gpu-shard.json"
    kernels = sorted(RESULTS.glob(f"kernels-{stamp:%Y%m%d}*.md"))
    record = {"date": stamp.isoformat(timespec="seconds"), "dry_run": dry,
              "command": " ".join(sys.argv), "steps": steps,
              "shard": json.loads(shard.read_text()) if shard.is_file() else None}
    lines = [f"# GPU check {stamp:%Y-%m-%d}{' (dry run on CPU)' if dry else ''}", "",
             f"`{record['command']}`", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {'ok' if s['rc'] == 0 else 'FAILED rc ' + str(s['rc'])} | "
              f"{s['seconds']} |" for s in steps]
    device = next((s for s in steps if s["step"] == "device"), None)
    if device:
        lines += ["", "## Device", "", "```", device["tail"].strip()[-1200:], "```"]
    tests = next((s for s in steps if s["step"] == "tests"), None)
    if tests:
        lines += ["", "## GPU tests", "", "```", tests["tail"].strip()[-1200:], "```"]
    if record["shard"]:
        s = record["shard"]
        lines += ["", f"## One {s['shards']}-way {s['config']} shard ({s['dtype']})", "",
                  f"shape: {s['shape']}", "", "| backend | fwd+bwd ms | peak GiB | planner GiB "
                  "| measured/planner | sampler step ms | sampler peak GiB |", "|---|---|---|---|"
                  "---|---|---|"]
        for r in s["rows"]:
            ratio = r["measured_over_predicted"]
            lines.append(f"| {r['backend']} | {r['fwd_bwd_ms']:.1f} | {r['peak_fwd_bwd_gib']:.2f} "
                         f"| {r['predicted_fwd_bwd_gib']:.2f} | "
                         f"{'n/a' if ratio is None else f'{ratio:.2f}'} | "
                         f"{r['sampler_step_ms']:.1f} | {r['peak_sampler_gib']:.2f} |")
    if kernels and not dry:
        lines += ["", "## Kernels", "", kernels[-1].read_text()]
        if out != RESULTS:  # the kernels record beside this one
            for k in RESULTS.glob(f"{kernels[-1].stem}.*"):
                shutil.copy(k, out / k.name)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(record, indent=2) + "\n")
    return md, js


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="run the steps on a CPU, toy sizes")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the record goes")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all steps")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args(argv)
    if not args.dry_run:
        ok, why = has_gpu(args.python)
        if not ok:
            print(f"gpu_check: error: no GPU here ({why}); run it on a machine with an NVIDIA "
                  "GPU, or pass --dry-run to run its steps on the CPU", file=sys.stderr)
            return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if not args.dry_run:  # the kernels built by the `build` step (a dry run only configures)
        env["HPCDS_NATIVE_DIR"] = str(REPO / "build" / "gpu")
    log = out / "gpu-check.log"
    log.write_text("")
    deadline = time.monotonic() + args.budget
    cmds = commands(args.dry_run, args.python, out)
    steps = [run_step(s, cmds[s], env, deadline, log)
             for s in args.steps.split(",")]
    md, js = write_report(out, steps, args.dry_run)
    print(f"[gpu_check] wrote {md} and {js}")
    return 1 if any(s["rc"] for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
