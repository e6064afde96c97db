"""Each (method, seed) gets its own peak memory, not the process's lifetime high-water mark."""

import sys

import pytest
import torch

from codecl.memory import PeakMemory

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident-set peak is reset through Linux's /proc")
def test_a_small_method_after_a_large_one_reports_its_own_peak():
    meter = PeakMemory(torch.device("cpu"))
    meter.start()
    large = torch.ones(400 * MIB // 4)  # 400 MiB of float32, touched, so resident
    del large
    first = meter.read()
    meter.start()
    small = torch.ones(20 * MIB // 4)
    del small
    second = meter.read()
    assert first["memory_kind"] == second["memory_kind"] == "rss_peak_since_start"
    # The lifetime peak would report the 400 MiB again for the second method.
    assert first["peak_memory_mb"] - first["memory_at_start_mb"] >= 390
    assert second["peak_memory_mb"] - second["memory_at_start_mb"] < 100
    assert second["peak_memory_mb"] < first["peak_memory_mb"] - 300
