"""One training step per model (bf16 autocast, fp32 weights, fused AdamW, byte vocab): bytelm's
base preset for each arch, and the anchors importable here, side by side.

    python scripts/bench_models.py [--shapes 8x2048,2x8192] [--anchor-src .carry/mamba_ssm_src]

Anchors: mamba_ssm's MambaLMHeadModel (Mamba-1 needs its compiled CUDA scan; Mamba-2 runs on its
Triton kernels with use_mem_eff_path=False when the causal_conv1d package is missing), and
transformers' LlamaForCausalLM (sdpa, 12 layers, d_model 768, MLP 2048). An anchor that cannot be
imported gets a row saying why.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import types

import torch
import torch.nn.functional as F

VOCAB = 264


def block_times(step, steps, repeats, sync=lambda: None):
    """Seconds per call of `step` in each of `repeats` consecutive blocks of `steps` calls."""
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        out.append((time.perf_counter() - t0) / steps)
    return out


def step_timer(model, batch, seqlen, steps=5, warmup=3, repeats=3):
    """(median, lowest, highest tokens/s over `repeats` blocks of `steps` training steps, peak
    GiB): forward, loss, backward, fused AdamW. One block of 10 steps spread ±15 % between
    runs of one model (H200, 2026-12-04), so the table shows the spread of its blocks."""
    model = model.cuda().float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, VOCAB, (batch, seqlen + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids[:, :-1])
            logits = out.logits if hasattr(out, "logits") else out
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rates = sorted(batch * seqlen / t for t in block_times(step, steps, repeats, torch.cuda.synchronize))
    return rates[len(rates) // 2], rates[0], rates[-1], torch.cuda.max_memory_allocated() / 2 ** 30


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def bytelm_models():
    from bytelm.models import LM, make_config
    for arch in ("mamba", "mamba2", "transformer", "hybrid"):
        yield f"bytelm {arch} (base)", (lambda a=arch: LM(make_config(a, "base", VOCAB)))


def mamba_ssm_models(src):
    pkg = os.path.join(src, "mamba_ssm")
    if "mamba_ssm" not in sys.modules and os.path.isdir(pkg):
        mod = types.ModuleType("mamba_ssm")
        mod.__path__ = [pkg]
        sys.modules["mamba_ssm"] = mod
        sys.path.insert(0, src)

    def build(layer):
        if layer == "Mamba2" and "selective_scan_cuda" not in sys.modules:
            try:
                import selective_scan_cuda  # noqa: F401
            except ImportError:
                # mixer_seq_simple imports the Mamba-1 module, which imports the compiled scan at
                # module level; Mamba-2 never calls it, so an empty stand-in lets it import.
                sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        ssm_cfg = {"layer": layer}
        if layer == "Mamba2":
            try:
                import causal_conv1d  # noqa: F401
            except ImportError:
                ssm_cfg["use_mem_eff_path"] = False  # its fused path needs the causal_conv1d package
        cfg = MambaConfig(d_model=768, n_layer=24, vocab_size=VOCAB, ssm_cfg=ssm_cfg, rms_norm=True,
                          fused_add_norm=True, residual_in_fp32=True, pad_vocab_size_multiple=8)
        return MambaLMHeadModel(cfg)

    yield "mamba_ssm Mamba-1 (24L d768)", (lambda: build("Mamba1"))
    yield "mamba_ssm Mamba-2 (24L d768)", (lambda: build("Mamba2"))


def llama_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=32768,
                      tie_word_embeddings=True)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8x2048,2x8192")
    ap.add_argument("--anchor-src", default=".carry/mamba_ssm_src")
    ap.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    ap.add_argument("--repeats", type=int, default=3, help="timed blocks (the median is shown)")
    args = ap.parse_args()
    if args.steps < 1 or args.repeats < 1:
        sys.exit(f"--steps {args.steps} --repeats {args.repeats}: both must be at least 1")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    models = list(bytelm_models()) + list(mamba_ssm_models(args.anchor_src)) + \
        [("transformers Llama sdpa (12L d768 MLP2048)", llama_model)]
    from bytelm.kernels import kernel_backends
    print(f"# {datetime.date.today()} {torch.cuda.get_device_name()} torch {torch.__version__}")
    print(f"# bytelm backends on cuda: {kernel_backends('cuda')}")
    print(f"# tokens/s: median of {args.repeats} blocks of {args.steps} steps (lowest-highest)")
    print("| model | params | batch x len | tokens/s | peak GiB |")
    print("|---|---|---|---|---|")
    for name, build in models:
        for batch, seqlen in shapes:
            try:
                model = build()
                params = f"{n_params(model) / 1e6:.1f} M"
                tps, lo, hi, peak = step_timer(model, batch, seqlen, steps=args.steps, repeats=args.repeats)
                print(f"| {name} | {params} | {batch}x{seqlen} | {tps / 1e3:.0f} k ({lo / 1e3:.0f}-{hi / 1e3:.0f}) "
                      f"| {peak:.1f} |", flush=True)
            except Exception as err:  # one model failing must not hide the others
                msg = repr(err).replace("|", "/").splitlines()[0][:150]
                print(f"| {name} | | {batch}x{seqlen} | not run: {msg} | |", flush=True)
            finally:
                model = None
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
