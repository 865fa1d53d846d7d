"""GPU correctness of the Mamba-2 family at real shapes, then a whole-model cross-check.

    python scripts/gpu_check_mamba2.py            (writes nothing; exit 1 on any failure)

1. pytest tests/test_conv_norm_triton.py tests/test_ssd_triton.py (real shapes on CUDA).
2. bytelm's Mamba-2 base-width model (4 layers) in bf16 autocast: loss and every gradient with
   BYTELM_KERNELS=auto (Triton norm + conv, reference SSD under autograd), and with auto plus
   BYTELM_SSD_BWD=triton (the Triton SSD backward too) and =grouped (its grouped form), against
   =ref, and no-grad logits
   (Triton SSD forward) against =ref, with packed documents.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.nn.functional as F


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# mode -> BYTELM_SSD_BWD; BYTELM_KERNELS is the part before "+"; the first mode is the reference
MODES = {"ref": "ref", "auto": "ref", "auto+ssd_bwd": "triton", "auto+grouped": "grouped"}


def model_check():
    from bytelm.models import LM, make_config
    torch.manual_seed(0)
    model = LM(make_config("mamba2", "base", 264, n_layer=4)).cuda()
    ids = torch.randint(0, 264, (2, 1500), device="cuda")
    doc = torch.cumsum((torch.rand(2, 1500, device="cuda") < 0.002).int(), 1)
    out = {}
    for mode, ssd_bwd in MODES.items():
        os.environ["BYTELM_KERNELS"] = mode.split("+")[0]
        os.environ["BYTELM_SSD_BWD"] = ssd_bwd
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids, doc_ids=doc)
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            nograd = model(ids, doc_ids=doc).float()
        out[mode] = (loss.item(), grads, nograd)
    os.environ.pop("BYTELM_KERNELS")
    os.environ.pop("BYTELM_SSD_BWD")
    lr, gr, nr = out["ref"]
    ok = True
    for mode in list(MODES)[1:]:
        la, ga, na = out[mode]
        worst = max((rel(ga[n], gr[n]), n) for n in gr)
        print(f"model {mode}: loss ref {lr:.5f} {mode} {la:.5f}; no-grad logits rel {rel(na, nr):.2e}; "
              f"worst grad rel {worst[0]:.2e} ({worst[1]})")
        ok = ok and abs(lr - la) < 1e-2 and rel(na, nr) < 2e-2 and worst[0] < 5e-2
    print("model check", "OK" if ok else "FAILED")
    return ok


if __name__ == "__main__":
    if "--no-pytest" in sys.argv:
        sys.exit(0 if model_check() else 1)
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:warnings",
                          "tests/test_conv_norm_triton.py", "tests/test_ssd_triton.py"])
    print("pytest rc", rc)
    ok = model_check()
    sys.exit(0 if rc == 0 and ok else 1)
