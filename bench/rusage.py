"""Run a command and write its CPU time and peak RSS as JSON (stdlib only, so it starts small).

    python -m bench.rusage OUT.json -- CMD ...

Why a wrapper: on Linux a child's `ru_maxrss` starts from the RSS of the process that forked it
(the high-water mark survives exec), so a benchmark process holding a large plan would report
its own size for every child. Forked from this small process, the figure is the command's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    out, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit("usage: python -m bench.rusage OUT.json -- CMD ...")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    with open(out, "w") as f:  # noqa: PTH123 - stdlib only, small
        json.dump(
            {
                "wall_s": wall,
                "cpu_s": ru.ru_utime + ru.ru_stime,
                "peak_rss_mb": ru.ru_maxrss / 1024,
                "status": status,
            },
            f,
        )
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
