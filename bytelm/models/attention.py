"""Transformer++ block pieces: causal multi-head attention with RoPE, and the SwiGLU MLP.

Glossary:
    d_model   D        width of the residual stream
    n_head    H        attention heads; head_dim = D / H
    mlp_hidden F       SwiGLU hidden width: fc2(silu(gate) · up), fc1 producing [up, gate]
    rope_theta         RoPE base; rotary on the whole head, GPT-NeoX "rotate half" layout

Names follow mamba_ssm's MHA and GatedMLP (mixer.in_proj (3D, D) fused q|k|v, mixer.out_proj,
mlp.fc1 (2F, D), mlp.fc2), so its hybrid checkpoints' attention layers load unchanged.
No biases anywhere. The RMSNorms and residual adds live in lm.Block.

Document masking: given doc ids (B, L), a query never attends to a key of another document
(block-diagonal causal mask, built once per forward by `doc_attention_mask`). When no row holds a
boundary, the mask is None and SDPA takes its is_causal fast path.

Decoding: the KV cache is two pre-allocated (batch, max_len, H, head_dim) tensors per layer;
a call with L tokens at cache position p writes rows [p, p+L) and attends to rows [0, p+L).

What this file does not do: no grouped-query attention, no sliding window, no dropout, no
flash-attention varlen path (the boolean mask is O(L²) memory per row when documents are packed).
"""

import torch
import torch.nn.functional as F
from torch import nn


def rope_cos_sin(positions, head_dim, theta, device):
    """positions (L,) int -> cos, sin (L, head_dim / 2) in fp32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = positions.to(device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x (B, L, H, Dh); cos, sin (L, Dh/2). Rotate-half layout; computed in fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]                       # (L, 1, Dh/2)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def doc_attention_mask(doc_ids):
    """doc_ids (B, L) -> None when every row is one document (use is_causal), else a boolean
    (B, 1, L, L) mask, True where query i may attend key j: j <= i and same document."""
    if doc_ids is None or bool((doc_ids == doc_ids[:, :1]).all()):
        return None
    L = doc_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]               # (B, L, L)
    return (same_doc & causal)[:, None]


class MHA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.rope_theta = cfg.rope_theta
        self.in_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)   # -> [q, k, v]
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, attn_mask=None, state=None, pos=0):
        """x (B, L, D) -> (B, L, D). attn_mask: None (plain causal) or (B, 1, L, L) bool.
        With `state` (holding k, v caches), the L new tokens sit at positions [pos, pos+L)."""
        bsz, L, d = x.shape
        q, k, v = self.in_proj(x).view(bsz, L, 3, self.n_head, self.head_dim).unbind(2)  # (B, L, H, Dh)
        cos, sin = rope_cos_sin(torch.arange(pos, pos + L, device=x.device), self.head_dim, self.rope_theta, x.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        is_causal = attn_mask is None and L > 1
        if state is not None:
            state.k[:, pos:pos + L] = k
            state.v[:, pos:pos + L] = v
            k, v = state.k[:, :pos + L].to(q.dtype), state.v[:, :pos + L].to(q.dtype)  # (B, pos+L, H, Dh)
            if pos > 0 and L > 1:
                if attn_mask is not None:
                    raise ValueError("document masks are not supported for a prefill that continues a cache")
                # query i sits at absolute position pos+i and sees keys 0..pos+i
                attn_mask = torch.ones(L, pos + L, dtype=torch.bool, device=x.device).tril(diagonal=pos)
                is_causal = False
            elif L == 1:
                is_causal = False                                            # the last query sees every key
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=attn_mask, is_causal=is_causal)  # (B, H, L, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(bsz, L, d))          # (B, L, D)

    def allocate_state(self, batch_size, max_len, device, dtype):
        shape = (batch_size, max_len, self.n_head, self.head_dim)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)


class GatedMLP(nn.Module):
    """SwiGLU: fc2(up · silu(gate)), with fc1 producing [up, gate] as in mamba_ssm's GatedMLP."""

    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, 2 * cfg.mlp_hidden, bias=False)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        up, gate = self.fc1(x).chunk(2, dim=-1)                             # (B, L, F) each
        return self.fc2(up * F.silu(gate))                                   # (B, L, D)
