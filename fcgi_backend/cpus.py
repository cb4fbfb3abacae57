"""Which CPUs the workers may run on: Linux's CPU list syntax ("1", "2-3", "0,2-3"), as in
``taskset -c`` and /sys/devices/system/cpu/online.

Keeping the workers off the CPUs the web server runs on spares the web server wake-ups across
CPUs, which some virtual machines charge dearly for: on a small host the two otherwise take turns
on every core (README, *Small pages*)."""

from __future__ import annotations

import os


def parse_cpu_list(text: str) -> frozenset[int]:
    """The CPU numbers ``text`` names; ValueError says what is wrong with it."""
    cpus: set[int] = set()
    for item in text.replace(" ", "").split(","):
        first, dash, last = item.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list such as 1, 2-3 or 0,2-3")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{item!r} in {text!r} runs backwards")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def available_cpus() -> frozenset[int]:
    """The CPUs this process may run on (its own affinity: a container's or a cgroup's limit)."""
    return frozenset(os.sched_getaffinity(0))


def checked_cpu_list(text: str) -> frozenset[int]:
    """``text`` parsed, every CPU in it one this process may use; ValueError otherwise."""
    cpus, usable = parse_cpu_list(text), available_cpus()
    if not cpus <= usable:
        raise ValueError(f"CPU {format_cpu_list(cpus - usable)} is not available here "
                         f"(this process may use {format_cpu_list(usable)})")
    return cpus


def format_cpu_list(cpus) -> str:
    """``cpus`` in the list syntax, runs joined: {0, 1, 2, 5} -> "0-2,5"."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def pin_this_process(cpus: frozenset[int]) -> None:
    """Run this process (and what it forks from here on) on ``cpus`` only."""
    os.sched_setaffinity(0, cpus)
