"""Run the Mamba-1 scan forward a few times at one shape, for Nsight Compute (stall reasons).

    ncu --kernel-name regex:_fwd_ --launch-skip 2 --launch-count 1 \\
        --section SchedulerStats --section WarpStateStats --section ComputeWorkloadAnalysis \\
        python3 scripts/ncu_scan_fwd.py --batch 8 --length 2048 [--set R=4,prefetch=1]

--set updates the lanes forward's LANES_CFG (BYTELM_SCAN_FWD=lanes) or, with
BYTELM_SCAN_FWD=seq, version 3's SEQ_CFG; values are ints or None.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_kernels import scan_inputs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--set", default="", help="comma-separated key=value config updates")
    args = p.parse_args()
    from bytelm.kernels.selective_scan import triton_fwd, triton_fwd_lanes
    from bytelm.kernels.selective_scan.triton_op import selective_scan

    cfg = triton_fwd_lanes.LANES_CFG if triton_fwd.forward_version() == "lanes" else triton_fwd.SEQ_CFG
    for item in filter(None, args.set.split(",")):
        key, value = item.split("=")
        cfg[key] = None if value == "None" else int(value)
    inputs = scan_inputs(args.batch, args.length)
    with torch.no_grad():
        for _ in range(args.runs):
            selective_scan(**inputs, delta_softplus=True)
    torch.cuda.synchronize()
    print(f"{triton_fwd.forward_version()} {cfg} at {args.batch}x{args.length}: ran {args.runs}")


if __name__ == "__main__":
    main()
