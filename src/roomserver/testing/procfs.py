"""What Linux's ``/proc`` says about processes, for the benchmarks and the fault tests: a
process's children, CPU seconds (of a process or one of its threads), memory figures, and
whether a process still runs."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _after_command(stat: str) -> list[str]:
    """The fields of a ``stat`` line after the command name (which may hold spaces)."""
    return stat[stat.rindex(")") + 2 :].split()


def children(parent: int | None = None) -> list[tuple[int, str, bytes]]:
    """The children of ``parent`` (default: this process): pid, command name, command line.
    Processes that end while they are read are left out."""
    parent = os.getpid() if parent is None else parent
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(_after_command(stat)[1]) != parent:
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        out.append((int(entry.name), stat[stat.index("(") + 1 : stat.rindex(")")], cmdline))
    return out


def cpu_seconds(pid: int | str, *, thread: int | str | None = None) -> float:
    """User plus system CPU seconds of process ``pid`` (``"self"``: this one), or of its
    ``thread``. Raises ``OSError`` when it is gone."""
    path = Path(f"/proc/{pid}/stat") if thread is None else Path(f"/proc/{pid}/task/{thread}/stat")
    fields = _after_command(path.read_text())
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, field: str) -> int:
    """A memory figure of ``/proc/PID/status`` in KiB (``VmRSS``: now, ``VmHWM``: peak); 0
    when it has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        return _after_command(Path(f"/proc/{pid}/stat").read_text())[0] != "Z"
    except OSError:
        return False
