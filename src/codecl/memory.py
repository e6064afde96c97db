"""Peak memory of one (method, seed): its own high-water mark, not the process's.

One process runs every method in turn, so the process's lifetime peak (`ru_maxrss`) only grows from
method to method and says nothing about the later ones. Each measurement therefore starts by resetting
the peak:
- on CUDA, `torch.cuda.reset_peak_memory_stats()`; the peak is `max_memory_allocated`, the tensors alone;
- on Linux, writing 5 to `/proc/self/clear_refs` resets the resident-set high-water mark (`VmHWM` in
  `/proc/self/status`) to the current RSS (proc(5), Linux 4.0 and later); the peak is the process's
  RSS, so it includes what was resident when the method started (the base model, the data, the
  interpreter, and heap that earlier methods freed but the allocator kept), recorded beside it as
  `memory_at_start_mb`; the difference is the method's own growth.
Where neither is available the lifetime peak is all there is, and `memory_kind` says so.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_RESIDENT_PEAK = "5"


class PeakMemory:
    """`start()` before a method, `read()` after it: the dict a result record stores."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_max_rss_lifetime"
        self.at_start_mb: float | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.at_start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return
        try:
            _CLEAR_REFS.write_text(_RESET_RESIDENT_PEAK)
            self.kind = "rss_peak_since_start"
        except OSError:  # not Linux, or /proc is read-only here
            self.kind = "process_max_rss_lifetime"
        self.at_start_mb = _status_mb("VmRSS")

    def read(self) -> dict:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "rss_peak_since_start":
            peak = _status_mb("VmHWM")
        else:  # Linux reports ru_maxrss in KiB
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"peak_memory_mb": round(peak, 1), "memory_at_start_mb": _rounded(self.at_start_mb),
                "memory_kind": self.kind}


def _status_mb(field: str) -> float | None:
    """A `kB` field of /proc/self/status in MiB, or None where there is no such file."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
