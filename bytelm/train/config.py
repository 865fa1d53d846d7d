"""Training configuration and the defaults that make `bytelm train --data dna` a good run.

Defaults depend on the device: on a CPU a tiny model that beats every generic compressor in a
few minutes; on a GPU the 90M base preset at the benchmark shape (8 x 2048 tokens), unless the
corpus is too small for it: a default GPU run sees ~4.9 M tokens, and a 90M model trained for
several epochs over a ~1 MB corpus (Tiny Shakespeare) memorises it (val 2.47 bits/byte at 300
steps, measured). Below SMALL_CORPUS_TOKENS train tokens the GPU default is the 20M small
preset with residual dropout 0.1 on 32 x 512 windows (same tokens per step), which reaches
2.07 there (H100, 2026-11-23).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from bytelm.errors import UserError


@dataclass
class TrainConfig:
    data: str = "dna"
    model: str = "mamba2"
    preset: str | None = None        # None: tiny on CPU, base on CUDA
    tokenizer: str = "byte"
    bpe_vocab: int = 4096
    seq_len: int | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    steps: int | None = None
    lr: float | None = None
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio
    warmup: int | None = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int | None = None
    eval_tokens: int | None = None   # cap on val tokens for interim evals (the final eval is full)
    save_every: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    cache_dir: str | None = None
    keep_case: bool = False
    field: str | None = None
    model_overrides: dict | None = None   # e.g. {"d_state": 64}: ModelConfig fields

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Per-device defaults, filled in where the user gave nothing.
CPU_DEFAULTS = dict(preset="tiny", seq_len=256, batch_size=16, steps=250, lr=3e-3, warmup=25,
                    eval_every=100, eval_tokens=65536)
CUDA_DEFAULTS = dict(preset="base", seq_len=2048, batch_size=8, steps=300, lr=1e-3,
                     warmup=50, eval_every=100, eval_tokens=None)
# GPU defaults when the train split is smaller than SMALL_CORPUS_TOKENS (the default run would
# take more than ~2 epochs over it).
SMALL_CORPUS_TOKENS = 2_500_000
CUDA_SMALL_CORPUS_DEFAULTS = dict(CUDA_DEFAULTS, preset="small", seq_len=512, batch_size=32,
                                  lr=2e-3, warmup=30)
SMALL_CORPUS_DROPOUT = 0.1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible to torch; use --device cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)


def with_defaults(cfg: TrainConfig, device: torch.device,
                  train_tokens: int | None = None) -> TrainConfig:
    """Fill what the user left unset. `train_tokens` (size of the train split) picks the GPU
    small-corpus defaults; they apply as a whole only when the user chose no preset."""
    values = cfg.to_dict()
    small = (device.type == "cuda" and train_tokens is not None
             and train_tokens < SMALL_CORPUS_TOKENS and values["preset"] is None)
    if device.type != "cuda":
        defaults = CPU_DEFAULTS
    else:
        defaults = CUDA_SMALL_CORPUS_DEFAULTS if small else CUDA_DEFAULTS
    if small and "dropout" not in (values["model_overrides"] or {}):
        values["model_overrides"] = dict(values["model_overrides"] or {},
                                         dropout=SMALL_CORPUS_DROPOUT)
    for key, value in defaults.items():
        if values[key] is None:
            values[key] = value
    if values["save_every"] is None:
        values["save_every"] = values["eval_every"]
    if values["out"] is None:
        values["out"] = f"runs/{values['model']}-{values['data'].replace('/', '_')}"
    for key in ("seq_len", "batch_size", "steps", "grad_accum", "eval_every", "save_every"):
        if values[key] <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {values[key]}")
    return TrainConfig.from_dict(values)


# Fields that must agree between a run and its --resume: they define the model, the data and
# the sampled stream. (steps may grow, to train longer.)
RESUME_KEYS = ("data", "model", "preset", "tokenizer", "bpe_vocab", "seq_len", "batch_size",
               "grad_accum", "seed", "keep_case", "field", "model_overrides")
