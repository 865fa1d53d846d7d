"""Which backend runs a kernel op: the PyTorch reference or a Triton kernel.

One rule for every family, read from the environment variable ``BYTELM_KERNELS``:

- unset or ``auto``: Triton when the inputs are CUDA tensors and that op has a Triton
  implementation that imports; otherwise the reference.
- ``ref``: always the reference (the definition of correct; the CPU path).
- ``triton``: always Triton, CPU tensors included (useful under ``TRITON_INTERPRET=1``); an op
  without a Triton kernel is a ``UserError`` rather than a silent fallback, so a benchmark or a
  test that asked for Triton never measures the reference by accident.

A family provides Triton by adding ``triton_op.py`` beside its ``op.py`` that defines a function
with the op's public name and signature (usually a thin wrapper over a torch.autograd.Function
built from ``triton_fwd.py`` / ``triton_bwd.py``). Nothing here imports triton: the lookup is lazy,
so ``import bytelm.kernels`` works on machines without triton or a GPU.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Callable

from bytelm.errors import UserError

ENV_VAR = "BYTELM_KERNELS"
CHOICES = ("auto", "ref", "triton")


def requested_backend() -> str:
    """The validated value of BYTELM_KERNELS ("auto" when unset or empty)."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise UserError(
            f"{ENV_VAR}={os.environ.get(ENV_VAR)!r} is not one of {', '.join(CHOICES)}; "
            f"unset it or set it to ref or triton"
        )
    return value


def env_choice(name: str, choices: tuple[str, ...], what: str) -> str:
    """The validated value of a kernel-variant switch: the environment variable `name`, stripped
    and lower-cased, one of `choices` (unset or empty: choices[0]); otherwise a one-line
    UserError naming the accepted values. `what` says what the default is, for that message."""
    value = os.environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise UserError(f"{name}={os.environ.get(name)!r} is not one of {', '.join(choices)}; "
                        f"unset it ({what}) or set it to {' or '.join(choices[1:])}")
    return value


@functools.lru_cache(maxsize=None)
def triton_impl(package: str, op_name: str) -> Callable | None:
    """``<package>.triton_op.<op_name>``, or None while that op has no Triton implementation.

    Also None when triton itself is not installed (CPU-only machines). Any other import error
    inside an existing triton_op.py is a bug and propagates.
    """
    module_name = f"{package}.triton_op"
    if importlib.util.find_spec(module_name) is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] == "triton":
            return None
        raise
    return getattr(module, op_name, None)


def pick_backend(op_name: str, impl: Callable | None, on_cuda: bool) -> str:
    """"ref" or "triton" for one call of ``op_name`` (impl: its Triton function or None)."""
    mode = requested_backend()
    if mode == "ref":
        return "ref"
    if mode == "triton":
        if impl is None:
            raise UserError(
                f"{ENV_VAR}=triton but {op_name} has no Triton kernel yet; "
                f"unset {ENV_VAR} or set it to ref"
            )
        return "triton"
    return "triton" if (on_cuda and impl is not None) else "ref"
