"""Every SSD gradient's relative error against the float64 reference, case by case.

    python scripts/ssd_grad_errors.py [--rect on|off|both] [--cases N,...] [--cfg KEY=INT ...]

The cases, inputs and cotangents are those of test_ssd_backward_matches_reference
(tests/test_ssd_triton.py: BWD_CASES and backward_case; GPU: 8 heads, headdim 64, d_state 128,
chunk 256; CPU: the interpreter's tiny shapes), run with BWD_CFG["rect_dA"] on and/or off. The test stops at the first gradient over its tolerance; this
prints all of them (one line per case, the worst marked), so a precision change can be read off
in one run. --cfg sets other triton_bwd.BWD_CFG entries (e.g. --cfg grouped=1). Exit 1 when any
gradient misses the test's tolerance.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_ssd_triton as T  # noqa: E402  (the test's shapes, inputs and tolerances)

from bytelm.kernels.ssd import triton_bwd  # noqa: E402

def case_errors(dtype, seqlen, groups, with_state):
    _, (y, fs, got), (yr, fr, want) = T.backward_case(dtype, seqlen, groups, with_state)
    errs = {"y": T.rel_err(y, yr), "final": T.rel_err(fs, fr)}
    for name in want:
        errs[name] = T.rel_err(got[name], want[name]) if want[name].norm() >= 1e-6 else \
            got[name].double().norm().item()
    return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rect", choices=("on", "off", "both"), default="both")
    ap.add_argument("--cases", default="", help="comma-separated case numbers (default: all)")
    ap.add_argument("--cfg", action="append", default=[], metavar="KEY=INT",
                    help="a triton_bwd.BWD_CFG entry to set (repeatable)")
    a = ap.parse_args()
    for item in a.cfg:
        key, _, val = item.partition("=")
        if key not in triton_bwd.BWD_CFG or not val.lstrip("-").isdigit():
            sys.exit(f"--cfg {item!r}: expected KEY=INT with KEY one of {', '.join(triton_bwd.BWD_CFG)}")
        triton_bwd.BWD_CFG[key] = int(val)
    os.environ["BYTELM_SSD_BWD"] = "triton"
    triton_bwd.BWD_CFG["BLOCK_Q"] = T.BWD_BLOCK
    picked = [int(i) for i in a.cases.split(",") if i] or range(len(T.BWD_CASES))
    ok = True
    for rect in {"on": [True], "off": [False], "both": [False, True]}[a.rect]:
        triton_bwd.BWD_CFG["rect_dA"] = rect
        extra = "".join(f", {item}" for item in a.cfg)
        print(f"rect_dA {'on' if rect else 'off'}{extra} ({T.DEV}, shape {T.SHAPE}, chunk {T.BWD_CHUNK})")
        for i in picked:
            dtype, seqlen, groups, with_state = T.BWD_CASES[i]
            errs = case_errors(dtype, seqlen, groups, with_state)
            tol = T.TOL[dtype]
            worst = max(errs, key=errs.get)
            miss = [n for n, e in errs.items() if e > tol]
            ok = ok and not miss
            cells = " ".join(f"{n} {e:.1e}" for n, e in errs.items())
            print(f"  case {i} {str(dtype)[6:]} L{seqlen} g{groups} state {int(with_state)}: "
                  f"{'OK  ' if not miss else 'MISS'} worst {worst} {errs[worst]:.1e} | {cells}",
                  flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
