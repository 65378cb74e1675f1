"""The machine as the runner sees it: paths, the log line, CPU use from /proc, report facts."""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

LOAD_TESTS = Path(__file__).resolve().parents[1]
ROOT = LOAD_TESTS.parent
LOCAL = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def proc_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children_of(pid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


class CpuMeter:
    """CPU seconds used by a set of processes between start() and stop()."""

    def __init__(self, pid: int, include_children: bool = False) -> None:
        self.pid = pid
        self.include_children = include_children
        self.before: dict[int, int] = {}

    def _pids(self) -> list[int]:
        return [self.pid, *(children_of(self.pid) if self.include_children else [])]

    def start(self) -> None:
        self.before = {p: proc_ticks(p) for p in self._pids()}

    def stop(self) -> float:
        used = sum(proc_ticks(p) - self.before.get(p, 0) for p in self._pids())
        return used / CLOCK_TICKS


def machine_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (from /proc/stat): other work skews every figure."""

    def snapshot() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    total_a, idle_a = snapshot()
    time.sleep(seconds)
    total_b, idle_b = snapshot()
    elapsed = total_b - total_a
    return 1 - (idle_b - idle_a) / elapsed if elapsed else 0.0


def busy_cpu_seconds() -> float:
    """CPU seconds all CPUs spent in processes since boot (user+nice+system+steal). Interrupt time
    is left out: loopback traffic is handled in softirq and belongs to no process."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) / CLOCK_TICKS


def steal_cpu_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while this VM's CPUs wanted to run, since
    boot. A neighbour's load shows here and nowhere else: it slows every process of the run
    (CPU per request rose 20-60% in runs with ~8 s of steal) without being "other work"."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else 0.0


def children_cpu_seconds() -> float:
    """CPU of the bench itself and of every child it has reaped (wrk, py-spy)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def wait_for_quiet_machine(timeout_s: float, below: float = 0.10) -> float:
    """Wait (bounded) until other work on the machine has stopped; returns the last busy share."""
    deadline = time.monotonic() + timeout_s
    busy = machine_busy(0.5)
    while busy >= below and time.monotonic() < deadline:
        busy = machine_busy(0.5)
    return busy


def wait_until_idle(pid: int, timeout_s: float = 60, below: float = 0.05) -> float:
    """Wait for a server to finish work queued by the last case (e.g. logins whose clients left)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = proc_ticks(pid)
        time.sleep(0.25)
        if (proc_ticks(pid) - before) / CLOCK_TICKS / 0.25 < below:
            break
    return time.monotonic() - started


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
