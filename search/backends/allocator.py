"""glibc's allocator, set for a decode loop on CPU.

Every decode step allocates and frees tensors of a few hundred KB to a few MB (logits, attention scores, the
K/V rows of a step). With glibc's defaults, blocks above the dynamic mmap threshold come from fresh `mmap`s and
the heap top is trimmed back to the kernel on free, so each step maps, faults in and unmaps the same pages
again: a harvest spent a fifth of its CPU time in the kernel on minor page faults. Keeping those blocks on the
heap (a fixed mmap threshold at its maximum, no trimming below a generous threshold, some top padding) lets
the freed pages be reused. The same as setting MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ /
MALLOC_TOP_PAD_ before start, but from the program, so every entry point gets it.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
SETTINGS = {
    M_MMAP_THRESHOLD: 32 << 20,  # glibc's maximum on 64-bit: blocks below it come from the heap
    M_TRIM_THRESHOLD: 512 << 20,  # give memory back to the kernel only above this much free at the top
    M_TOP_PAD: 64 << 20,  # grow the heap in steps of this much, not page by page
}
ENV_NAMES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_done: bool | None = None


def tune() -> bool:
    """Apply SETTINGS once per process; False where it does not apply: not glibc, FACTORY_MALLOC=default (to
    measure against), or the user set glibc's own variables (theirs win)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("FACTORY_MALLOC") == "default" or any(name in os.environ for name in ENV_NAMES):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:  # musl, macOS: their allocators have no such knobs
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _done
