"""tests/subproc.py turns a native crash, heap corruption, an assertion or a hang in the child
into one failed test with the child's message; a clean child returns its stdout."""

from __future__ import annotations

import pytest

from subproc import run_isolated


def test_a_clean_child_returns_its_stdout_with_one_thread():
    assert run_isolated("print(torch.get_num_threads())").strip() == "1"


@pytest.mark.parametrize("code,expect", [
    ("assert 1 + 1 == 3, 'the child says why'", "the child says why"),
    ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    # a double free: glibc's heap check aborts the child at once
    ("import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
     "libc.malloc.restype = ctypes.c_void_p\nlibc.free.argtypes = [ctypes.c_void_p]\n"
     "p = libc.malloc(64)\nlibc.free(p)\nlibc.free(p)\nprint('survived')", "SIGABRT"),
])
def test_a_failing_child_fails_the_test_with_its_message(code, expect):
    with pytest.raises(pytest.fail.Exception, match=expect):
        run_isolated(code, timeout=120)


def test_a_hanging_child_fails_after_the_timeout():
    with pytest.raises(pytest.fail.Exception, match="did not finish within 3 s"):
        run_isolated("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout=3)
