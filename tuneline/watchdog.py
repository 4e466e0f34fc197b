"""Outlive a process to stop what it started: `python watchdog.py PID` (run as a script: standard library only).

Every half second it notes the descendants of PID (the embedded Prefect server, training workers, data loader
workers), each with its start time, so a reused pid is never mistaken for one of them. When PID is gone however it
ended (kill -9 included: no handler of the parent runs then), it sends SIGTERM to the descendants it saw that still
run, SIGKILL to those left 5 s later, and exits. A process the watchdog never saw (started and gone within half a
second) cannot outlive it by much either: its parent was one it saw.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None when the process is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def children(pid: int) -> list[int]:
    found = []
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children") as listed:
                found += [int(child) for child in listed.read().split()]
    except OSError:
        pass
    return found


def descendants(pid: int) -> dict[int, str]:
    """The processes under `pid`, this watchdog (a child of it too) left out."""
    seen, queue = {}, children(pid)
    while queue:
        child = queue.pop()
        started = start_time(child)
        if started is not None and child not in seen and child != os.getpid():
            seen[child] = started
            queue += children(child)
    return seen


def alive(pids: dict[int, str]) -> list[int]:
    return [pid for pid, started in pids.items() if start_time(pid) == started]


def watch(parent: int, interval: float = 0.5, grace: float = 5.0) -> list[int]:
    """Block until `parent` is gone, then stop the descendants it left; the pids that had to be stopped."""
    parent_started = start_time(parent)
    seen: dict[int, str] = {}
    while parent_started is not None and start_time(parent) == parent_started:
        seen.update(descendants(parent))
        seen = {pid: started for pid, started in seen.items() if start_time(pid) == started}
        time.sleep(interval)
    left = alive(seen)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        for pid in alive({pid: seen[pid] for pid in left}):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive({pid: seen[pid] for pid in left}) and time.monotonic() < deadline:
            time.sleep(0.1)
    return left


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal goes to the whole group: outlive it
    stopped = watch(int(sys.argv[1]))
    if stopped:
        print(f"tuneline watchdog: process {sys.argv[1]} ended; stopped {len(stopped)} processes it left: {stopped}",
              file=sys.stderr)
