"""Runs before any test module is collected: on a machine without CUDA, Triton kernels run under
its CPU interpreter. TRITON_INTERPRET must be set before the first `import triton` anywhere in
the process, because triton's own @jit library functions (tl.sigmoid, tl.sum's combine, ...) are
built in the mode the environment says at import time; a test module that imported triton
before another one set the variable left those functions un-interpreted and every interpreted
kernel that called them failed ("Cannot call @triton.jit'd outside of the scope of a kernel",
CI of 2026-12-02)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
