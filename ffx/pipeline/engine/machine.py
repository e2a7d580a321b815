"""The machine a stage's run happens on, as the build's records name it: host, CPU kernels, device.

On a cluster the stages run on compute nodes, not where `build.json` is written, so each run logs
its own machine (`BUILD/runs.jsonl`) and `build.json` lists the machines each stage ran on."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def cpu_kernels() -> str:
    """The CPU kernels torch uses here: `ATEN_CPU_CAPABILITY` where it is set, else the best this
    CPU has (avx512, avx2 or default). The detector's floats may differ between them; the shards
    do not, unless `shard.detector_outputs`."""
    if forced := os.environ.get("ATEN_CPU_CAPABILITY"):
        return forced
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8").split())
    except OSError:
        return "unknown"
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "default"


def device_name(device: str) -> str:
    """`device` with the GPU's model where it is one (`cuda:0 NVIDIA H100 80GB HBM3`)."""
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} {torch.cuda.get_device_name(torch.device(device))}"


def machine(device: str = "") -> dict[str, str]:
    """This machine as a run's record names it; `device` where the stage runs on one."""
    facts = {"host": socket.gethostname(), "cpu_kernels": cpu_kernels()}
    return facts | {"device": device_name(device)} if device else facts
