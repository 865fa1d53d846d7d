"""The training loop: AdamW, warmup + cosine, clipping, accumulation, bf16 autocast on CUDA.

One function, `train(cfg)`, does a whole run: prepares the corpus, builds the model, trains,
evaluates bits per byte on val every `eval_every` steps and at the end, checkpoints atomically
every `save_every` steps, on Ctrl-C and at the end, and resumes exactly (bitwise on CPU) from
the last checkpoint with `resume=True`.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bytelm.data import load_corpus
from bytelm.data.sampling import WindowSampler
from bytelm.errors import UserError
from bytelm.models import LM, ModelConfig, make_config
from bytelm.train import checkpoint as ckpt
from bytelm.train.config import RESUME_KEYS, TrainConfig, resolve_device, with_defaults
from bytelm.train.evaluate import autocast_for, evaluate

MAX_BAD_STEPS = 3
EVAL_TOKENS_PER_BATCH = 16384  # evaluation batches hold at least this many tokens


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats over targets >= 0, computed in fp32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine down to cfg.lr * min_lr_ratio at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if getattr(p, "_no_weight_decay", False) or p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)


class _Interrupt:
    """First Ctrl-C asks the loop to checkpoint and stop; a second one aborts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _oom_message(cfg: TrainConfig) -> str:
    return (f"out of memory at --batch-size {cfg.batch_size} x --seq-len {cfg.seq_len} "
            f"(preset {cfg.preset}); try --batch-size {max(1, cfg.batch_size // 2)} or "
            f"--seq-len {max(16, cfg.seq_len // 2)} (with --grad-accum to keep the batch)")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _run_config(cfg: TrainConfig, model_cfg: ModelConfig, corpus) -> dict:
    lo, hi = corpus.manifest["splits"]["train"]["byte_range"]
    present = np.nonzero(np.bincount(corpus.data[lo:hi], minlength=256))[0]
    return {"train": cfg.to_dict(), "model": model_cfg.to_dict(),
            "codec": corpus.manifest["codec"],
            "alphabet": [int(b) for b in present],  # byte values seen in training
            "data": {"source": corpus.manifest["source"],
                     "content_hash": corpus.manifest["content_hash"],
                     "splits": corpus.manifest["splits"]}}


def _check_resume(saved: dict, cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    old = TrainConfig.from_dict(saved["train"])
    diff = [k for k in RESUME_KEYS if getattr(old, k) != getattr(cfg, k)]
    if saved["model"] != model_cfg.to_dict():
        diff.append("model shape")
    if diff:
        shown = ", ".join(f"{k} (saved {getattr(old, k, '?')!r}, now {getattr(cfg, k, '?')!r})"
                          for k in diff[:3])
        raise UserError(f"--resume with a config that differs from the checkpoint's: {shown}; "
                        "rerun with the original options or use a new --out")


class TrainHooks:
    """What the loop trains on and how it scores: plain windows of the corpus by default.

    Experiments that change the token stream (the noise-padding suite pads it with fillers)
    subclass this. A sampler needs next_batch() -> (x, y, doc_ids), state_dict() and
    load_state_dict(); targets below 0 are ignored by the loss and count no bytes.
    """

    def make_sampler(self, corpus, cfg: TrainConfig):
        return WindowSampler(corpus.split("train"), cfg.seq_len, cfg.batch_size, seed=cfg.seed)

    def evaluate(self, model, corpus, split: str, cfg: TrainConfig, device, batch_size: int,
                 max_tokens: int | None) -> dict:
        return evaluate(model, corpus.split(split), corpus.codec, cfg.seq_len, batch_size,
                        device, max_tokens=max_tokens)


def train(cfg: TrainConfig, resume: bool = False, console=None, quiet: bool = False,
          hooks: TrainHooks | None = None) -> dict:
    device = resolve_device(cfg.device)
    corpus = load_corpus(cfg.data, tokenizer=cfg.tokenizer, bpe_vocab=cfg.bpe_vocab,
                         cache_dir=cfg.cache_dir, keep_case=cfg.keep_case, field=cfg.field,
                         seq_len=cfg.seq_len)   # a --seq-len too long fails before caching
    cfg = with_defaults(cfg, device, train_tokens=len(corpus.split("train")))
    corpus.check_window(cfg.seq_len)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    codec = corpus.codec
    try:
        model_cfg = make_config(cfg.model, cfg.preset, vocab_size=codec.vocab_size,
                                **(cfg.model_overrides or {}))
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc).strip("'\"")) from None

    pointer = None
    if resume:
        saved = ckpt.read_config(out)
        _check_resume(saved, cfg, model_cfg)
        pointer = ckpt.load_pointer(out)
    elif (out / ckpt.POINTER).exists():
        raise UserError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                        "or choose another --out")

    model = LM(model_cfg).to(device)
    optimizer = build_optimizer(model, cfg, device)
    hooks = hooks or TrainHooks()
    sampler = hooks.make_sampler(corpus, cfg)
    start_step, tokens_seen, bytes_seen = 0, 0, 0
    if pointer is not None:
        ckpt.load_weights(out, model, pointer)
        state = ckpt.load_train_state(out, pointer)
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(json.loads(state["sampler"]))
        torch.set_rng_state(state["torch_rng"])
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        bytes_seen = state["bytes_seen"]
    else:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_config(out, _run_config(cfg, model_cfg, corpus))
        if codec.name == "bpe":
            codec.save(out / "tokenizer.json")
    metrics = open(out / "metrics.jsonl", "a")

    def log(event: dict) -> None:
        metrics.write(json.dumps(event) + "\n")
        metrics.flush()

    def save(step: int) -> None:
        state = {"optimizer": optimizer.state_dict(), "step": step, "tokens_seen": tokens_seen,
                 "bytes_seen": bytes_seen, "sampler": json.dumps(sampler.state_dict()),
                 "torch_rng": torch.get_rng_state()}
        ckpt.save_checkpoint(out, model, state, step)

    n_params = model.num_params()
    eval_batch = max(cfg.batch_size, EVAL_TOKENS_PER_BATCH // cfg.seq_len)
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum
    byte_lengths = torch.from_numpy(codec.byte_lengths).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    from bytelm.train.progress import TrainProgress
    progress = TrainProgress(cfg.steps, start_step, console=console, quiet=quiet)
    progress.message(f"{cfg.model} ({cfg.preset}, {n_params / 1e6:.2f} M params) on "
                     f"{corpus.manifest['source']['spec']} [{cfg.tokenizer}], {device}, "
                     f"{cfg.steps} steps of {tokens_per_step:,} tokens -> {out}")
    val_bpb, bad_steps, last_good = None, 0, start_step
    train_time, train_tokens = 0.0, 0
    wall0 = time.time()
    step = start_step
    try:
        with _Interrupt() as interrupt, progress:
            while step < cfg.steps:
                if interrupt.requested:
                    save(step)
                    progress.message(f"interrupted at step {step}; checkpoint saved in {out} "
                                     "(continue with --resume)")
                    return _result(cfg, out, step, n_params, val_bpb, train_tokens, train_time,
                                   wall0, device, interrupted=True)
                t0 = time.time()
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                step_bytes = 0
                for _ in range(cfg.grad_accum):
                    x, y, docs = sampler.next_batch()
                    x, y, docs = x.to(device, non_blocking=True), y.to(device), docs.to(device)
                    with autocast_for(device):
                        logits = model(x, doc_ids=docs)
                    loss = lm_loss(logits, y)
                    (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach()
                    real = y >= 0  # targets < 0 (ignored by the loss) are not content
                    step_bytes += int(byte_lengths[y.clamp(min=0)][real].sum())
                loss_value = float(loss_sum) / cfg.grad_accum
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                    optimizer.zero_grad(set_to_none=True)
                    bad_steps += 1
                    progress.message(f"warning: non-finite loss or gradient at step {step + 1}; "
                                     f"step skipped ({bad_steps}/{MAX_BAD_STEPS})")
                    log({"step": step + 1, "event": "skipped", "loss": loss_value})
                    if bad_steps >= MAX_BAD_STEPS:
                        raise UserError(f"loss was NaN/inf for {MAX_BAD_STEPS} steps in a row "
                                        f"(steps {step - 1}-{step + 1}); stopping. The last good "
                                        f"checkpoint (step {last_good}) in {out} is intact; try "
                                        f"a lower --lr than {cfg.lr}")
                    step += 1
                    continue
                bad_steps = 0
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens_seen += tokens_per_step
                bytes_seen += step_bytes
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.time() - t0
                if step > start_step + 1 or step == cfg.steps:  # first step pays warm-up costs
                    train_time += dt
                    train_tokens += tokens_per_step
                tps = train_tokens / train_time if train_time > 0 else tokens_per_step / dt
                log({"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                     "tokens_seen": tokens_seen, "bytes_seen": bytes_seen, "tokens_per_s": tps})
                progress.update(step, loss_value, val_bpb, tps)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    result = hooks.evaluate(model, corpus, "val", cfg, device, eval_batch,
                                            None if step == cfg.steps else cfg.eval_tokens)
                    val_bpb = result["bits_per_byte"]
                    log({"step": step, "val_bits_per_byte": val_bpb, "val_bytes": result["bytes"],
                         "val_token_perplexity": result["token_perplexity"],
                         "tokens_seen": tokens_seen, "bytes_seen": bytes_seen})
                    progress.update(step, loss_value, val_bpb, tps)
                    progress.message(f"step {step}: loss {loss_value:.4f}, val {val_bpb:.4f} "
                                     f"bits/byte over {result['bytes']:,} bytes, {tps:,.0f} tok/s")
                if step % cfg.save_every == 0 or step == cfg.steps:
                    save(step)
                    last_good = step
    except Exception as exc:
        if _is_oom(exc):
            raise UserError(_oom_message(cfg)) from None
        raise
    finally:
        metrics.close()
    return _result(cfg, out, step, n_params, val_bpb, train_tokens, train_time, wall0, device)


def _result(cfg, out, step, n_params, val_bpb, train_tokens, train_time, wall0, device,
            interrupted: bool = False) -> dict:
    result = {"out": str(out), "steps": step, "params": n_params, "val_bits_per_byte": val_bpb,
              "tokens_per_s": train_tokens / train_time if train_time > 0 else None,
              "wall_s": time.time() - wall0, "device": str(device), "model": cfg.model,
              "preset": cfg.preset, "tokenizer": cfg.tokenizer, "interrupted": interrupted}
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    return result
