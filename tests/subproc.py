"""Run Python in a child interpreter so that a native crash is one failed test, never a dead run.

Tests that cross native kernels in unusual layouts (channels_last, the GPU suite's checks) run
their body through :func:`run_isolated`: a fresh ``python`` with ``MALLOC_CHECK_=3`` (glibc checks
every heap operation and aborts at the first corruption instead of running on with damaged
memory; glibc >= 2.34 needs ``libc_malloc_debug.so`` preloaded for it, which is done where the
library exists), one CPU thread, the same ``revsnn`` and ``tests/`` on the import path, and a
timeout. A non-zero exit, a signal or the timeout fails the calling test with the child's
stderr tail (an ``AssertionError`` in the child shows its message there).

    run_isolated("from test_columns import case; case(3)")      # a snippet
    run_isolated(argv=["benchmarks/gpu_suite.py", "--smoke"])   # a script
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

import revsnn

TESTS = Path(__file__).resolve().parent
SRC = Path(revsnn.__file__).resolve().parents[1]
_DEBUG_MALLOC = ("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                 "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                 "/lib/aarch64-linux-gnu/libc_malloc_debug.so.0",
                 "/usr/lib64/libc_malloc_debug.so.0")
#: prepended to every snippet: the suite's single thread (conftest.py does not run in the child)
PRELUDE = "import torch\ntorch.set_num_threads(1)\n"


def child_env() -> dict:
    """The environment of a child: heap checking on, one thread, this checkout importable."""
    env = dict(os.environ)
    env["MALLOC_CHECK_"] = "3"
    lib = next((p for p in _DEBUG_MALLOC if Path(p).exists()), None)
    if sys.platform.startswith("linux") and lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(filter(None, [env.get("LD_PRELOAD"), lib]))
    env.setdefault("OMP_NUM_THREADS", "1")
    path = [str(SRC), str(TESTS), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"was killed by {name} (a native crash)"
    return f"exited with code {rc}"


def _tail(text: str, lines: int = 40, chars: int = 6000) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


def run_isolated(code: Optional[str] = None, *, argv: Optional[Sequence[str]] = None,
                 timeout: float = 600.0, what: Optional[str] = None,
                 cwd: Optional[Path] = None) -> str:
    """Run ``code`` (a snippet, after :data:`PRELUDE`) or ``python *argv`` in a child; return its
    stdout. Fails the calling test on a non-zero exit, a signal or ``timeout`` seconds, with the
    child's stderr tail."""
    if (code is None) == (argv is None):
        raise TypeError("run_isolated takes a snippet or argv, not both")
    cmd: List[str] = [sys.executable, *(["-c", PRELUDE + code] if code is not None else argv)]
    label = what or (code.strip().splitlines()[-1][:80] if code is not None else " ".join(argv))
    try:
        done = subprocess.run(cmd, env=child_env(), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        err_text = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        pytest.fail(f"[{label}] did not finish within {timeout:.0f} s; stderr tail:\n"
                    f"{_tail(err_text)}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"[{label}] {_describe(done.returncode)} (MALLOC_CHECK_=3); stderr tail:\n"
                    f"{_tail(done.stderr)}", pytrace=False)
    return done.stdout
