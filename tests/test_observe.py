"""hpcds.observe.trace_range: one NVTX push/pop pair in the "hpcds" domain on the calling
thread, closed also when the body raises, and a torch.profiler label while a profiler runs."""

from __future__ import annotations

import threading

import pytest
import torch

from hpcds.observe import DOMAIN, trace_range


def test_a_range_is_pushed_and_popped_also_on_error(nvtx_ranges):
    with trace_range("optimizer"):
        with pytest.raises(ValueError):
            with trace_range("data"):
                raise ValueError("inside")
    me = threading.get_ident()
    assert nvtx_ranges.events == [(me, "push", "optimizer", DOMAIN), (me, "push", "data", DOMAIN),
                                  (me, "pop", None, DOMAIN), (me, "pop", None, DOMAIN)]
    assert nvtx_ranges.trees() == {me: [("optimizer", [("data", [])])]}


def test_the_torch_profiler_sees_the_ranges():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with trace_range("sampler_step"):
            torch.ones(3).sum()
    assert "sampler_step" in {e.name for e in prof.events()}
