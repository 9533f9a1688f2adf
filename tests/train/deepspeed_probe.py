"""Test helper (run by torchrun from test_deepspeed_bf16.py): `hpcds train` through
DeepSpeed's bf16 path on CPU — what a GPU run does (DeepSpeed casts the module to bf16; bf16
autocast), which the trainer enables only on CUDA — recording, on every rank, what each
DeepSpeedStepper.step() returns and every host read of a tensor made inside it.

    python tests/train/deepspeed_probe.py RECORD CONFIG key=value ... [--stop-at N]

writes RECORD.<rank>.json: [{"type", "device", "host_reads", "norm"}, ...] one per step.
"""

from __future__ import annotations

import json
import os
import sys

import deepspeed
import torch

from hpcds.cli.main import main
from hpcds.train import engine, trainer, validation

# a 0-d tensor's value reaches Python only through these
HOST_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__",
              "__index__")

_initialize, _step = deepspeed.initialize, engine.DeepSpeedStepper.step
records: list[dict] = []


def bf16_initialize(*args, config, **kwargs):
    return _initialize(*args, config={**config, "bf16": {"enabled": True}}, **kwargs)


def cpu_bf16_autocast(device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def probed_step(self):
    seen: list[str] = []
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def spy(name, fn):
        def read(*args, **kwargs):
            seen.append(name)
            return fn(*args, **kwargs)
        return read

    for name, fn in saved.items():
        setattr(torch.Tensor, name, spy(name, fn))
    try:
        norm = _step(self)
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)
    records.append({"type": type(norm).__name__, "device": str(getattr(norm, "device", "")),
                    "host_reads": seen, "norm": float(norm)})
    return norm


if __name__ == "__main__":
    record, argv = sys.argv[1], sys.argv[2:]
    deepspeed.initialize = bf16_initialize
    trainer.autocast = validation.autocast = cpu_bf16_autocast
    engine.DeepSpeedStepper.step = probed_step
    try:
        code = main(["train", *argv])
    finally:
        with open(f"{record}.{os.environ.get('RANK', '0')}.json", "w") as f:
            json.dump(records, f)
    sys.exit(code)
