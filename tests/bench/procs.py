"""Child processes and what /proc says about them.

Every child starts in its own session, so it doesn't get the terminal's Ctrl-C before we are
ready to stop it, and so its whole tree (granian's workers) can be ended by its process group id.
Processes.stop_all() runs from the orchestrator's finally block: on success, on error and on
Ctrl-C/SIGTERM alike.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 10.0  # seconds a child gets to exit cleanly (granian flushes the call log) before SIGKILL


class BenchError(Exception):
    """A failure that stops the bench with a message and a non-zero exit status."""


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]


class Processes:
    """Every child the bench starts, so that none outlives it."""

    def __init__(self) -> None:
        self._live: list[Managed] = []

    def start(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        stdout: int | IO | None = None,
    ) -> Managed:
        log_file = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else log_file,
                stderr=log_file,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log_file.close()  # the child has its own copy of the descriptor
        managed = Managed(name, proc, log)
        self._live.append(managed)
        return managed

    def run_captured(
        self,
        cmd: list[str],
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        merge_stderr: bool = False,
    ) -> str:
        """Run to completion; return stdout (and stderr if merged). Non-zero exit or timeout: BenchError."""
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,
        )
        managed = Managed(cmd[0], proc)
        self._live.append(managed)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{' '.join(cmd[:4])} ... did not finish within {timeout:.0f} s") from None
        finally:
            self.stop(managed)
        if proc.returncode != 0:
            detail = (err or out).decode(errors="replace")[-3000:]
            raise BenchError(f"{' '.join(cmd[:5])} ... exited with status {proc.returncode}:\n{detail}")
        return out.decode(errors="replace")

    def stop(self, managed: Managed, grace: float = STOP_GRACE) -> None:
        """SIGTERM the leader (graceful shutdown), then SIGKILL whatever is left of its group."""
        proc = managed.proc
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # The group id is the leader's pid (start_new_session); stragglers such as orphaned workers
        # are still in it even after the leader exited.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if managed in self._live:
            self._live.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self._live)):
            self.stop(managed)


# --- /proc ----------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:  # bounded: a process tree has no cycles and /proc was read once
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(root: int) -> float:
    """User + system CPU time used so far by root's process tree (all threads)."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


def _kib(path: Path, label: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(label):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mib(root: int) -> tuple[float, float, int, float]:
    """(RSS, PSS, process count, largest RSS) of root's tree. RSS counts shared pages in every process;
    PSS splits them. The largest process is the worker (granian's own process holds no Django): the goal
    is per worker."""
    pids = tree_pids(root)
    each = [_kib(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids]
    pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids)
    return sum(each) / 1024, pss / 1024, len(pids), max(each, default=0) / 1024


def free_port() -> int:
    """A free loopback port (for granian, which can't report a kernel-chosen one back to us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll predicate() until it is true or timeout seconds pass (bounded by design)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
