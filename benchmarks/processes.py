"""A child process's memory, for the benchmarks that run the daemon as one."""

from __future__ import annotations

from pathlib import Path


def high_water_mark(pid: int) -> int:
    """The process's peak resident set so far, in bytes (Linux's VmHWM); 0 once it has exited
    (a zombie's status has no memory lines, a reaped one's none at all)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) * 1024
