"""One whole training step (forward, loss, backward, gradient clipping, AdamW) as a CUDA graph.

The synthetic tasks' models are tiny (two layers of width 64): a step is a few hundred kernel
launches of microseconds each, so its time is the host's launch overhead (~10 ms a step on an
H200 measured 2026-12-02), not the GPU's work. Captured once per batch shape and replayed, a step
costs one graph launch. `bytelm synth --cuda-graph` uses it (opt-in until its loss curve has been
compared with the eager loop's on a GPU: tests/test_synthetic.py::test_cuda_graph_step_*).

The pattern is PyTorch's whole-network capture: the first WARMUP steps at a new shape run
eagerly on a side stream (real training steps, on fresh batches), then the step is captured
with the gradients set to None (so the captured backward writes them afresh each replay), and
each later step copies its batch into the captured input buffers and replays. The optimizer must
be capturable with a tensor learning rate (set with fill_, not by assignment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WARMUP = 3


def capturable_adamw(groups, lr: float, betas, device):
    """Fused, capturable AdamW whose learning rate is a device tensor (the schedule fills it)."""
    return torch.optim.AdamW(groups, lr=torch.tensor(float(lr), device=device), betas=betas,
                             fused=True, capturable=True)


class GraphedStep:
    """step(x, target, idx, lr) -> (loss, logits), the latter two valid until the next call.
    logits_fn(model, x, idx) gives the (B, n, V) answer logits; the loss is their cross-entropy
    against target (B, n); gradients are clipped to norm 1. bf16: the forward under bf16 autocast
    (else fp32)."""

    def __init__(self, model, opt, logits_fn, bf16: bool = True):
        self.model, self.opt, self.logits_fn, self.bf16 = model, opt, logits_fn, bf16
        self.graphs = {}       # shape key -> (graph, static x, target, idx, loss, logits)
        self.eager_left = {}   # shape key -> warmup steps still to run eagerly
        self.stream = torch.cuda.Stream()

    def _body(self, x, target, idx):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False, enabled=self.bf16):
            logits = self.logits_fn(self.model, x, idx)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return loss.detach(), logits.detach()

    def step(self, x, target, idx, lr: float):
        for group in self.opt.param_groups:
            group["lr"].fill_(lr)
        key = (tuple(x.shape), tuple(idx.shape))
        if key in self.graphs:
            graph, sx, st, si, loss, logits = self.graphs[key]
            sx.copy_(x), st.copy_(target), si.copy_(idx)
            graph.replay()
            return loss, logits
        left = self.eager_left.setdefault(key, WARMUP)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            self.opt.zero_grad(set_to_none=True)
            out = self._body(x, target, idx)
        torch.cuda.current_stream().wait_stream(self.stream)
        if left > 1:
            self.eager_left[key] = left - 1
        else:  # the last warmup step done: capture for the next one
            sx, st, si = x.clone(), target.clone(), idx.clone()
            graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                loss, logits = self._body(sx, st, si)
            self.graphs[key] = (graph, sx, st, si, loss, logits)
        return out
