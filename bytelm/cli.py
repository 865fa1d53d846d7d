"""The `bytelm` command. It parses arguments and calls one function per command; no logic here.

Bad input anywhere below raises `UserError`: printed as one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bytelm.errors import run_reporting_errors


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, default=None if required else "dna",
                   help="dna | text | PATH | hf:NAME[:CONFIG[:SPLIT[:FIELD]]]")
    p.add_argument("--keep-case", action="store_true",
                   help="FASTA: keep lowercase (soft-masked) bases instead of folding to uppercase")
    p.add_argument("--field", default=None, help=".jsonl/.parquet/hf: the text field (default text)")
    p.add_argument("--cache-dir", default=None,
                   help="corpus cache (default $BYTELM_CACHE or ~/.cache/bytelm)")


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", choices=["byte", "bpe"], default="byte")
    p.add_argument("--bpe-vocab", type=int, default=4096, help="BPE vocabulary size (default 4096)")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bytelm", description="Byte-level language modeling: Mamba-1, "
                     "Mamba-2 and Transformer baselines on raw bytes and DNA.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="prepare corpora and show their baselines")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    stats = data_sub.add_parser("stats", help="sizes, splits and compressor/Markov baselines")
    _data_args(stats)
    _tokenizer_args(stats)
    stats.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")

    train = sub.add_parser("train", help="train a model; checkpoints and metrics go to --out")
    _data_args(train, required=False)
    _tokenizer_args(train)
    train.add_argument("--model", choices=["mamba", "mamba2", "transformer", "hybrid"],
                       default="mamba2")
    train.add_argument("--preset", choices=["tiny", "small", "base", "large"], default=None,
                       help="model size (default: tiny on CPU; base on CUDA, or small "
                            "with dropout 0.1 when the train split is under 2.5 M tokens)")
    train.add_argument("--dropout", type=float, default=None,
                       help="dropout on residual branches (default 0, or 0.1 with the CUDA "
                            "small-corpus defaults)")
    train.add_argument("--seq-len", type=_positive(int))
    train.add_argument("--batch-size", type=_positive(int))
    train.add_argument("--grad-accum", type=_positive(int), default=1)
    train.add_argument("--steps", type=_positive(int))
    train.add_argument("--lr", type=_positive(float))
    train.add_argument("--warmup", type=int)
    train.add_argument("--eval-every", type=_positive(int))
    train.add_argument("--save-every", type=_positive(int))
    train.add_argument("--device", default="auto", help="auto | cpu | cuda")
    train.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA)")
    train.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")

    ev = sub.add_parser("eval", help="bits per byte of a checkpoint on a split")
    ev.add_argument("ckpt", help="a run directory written by bytelm train")
    _data_args(ev)
    ev.add_argument("--split", choices=["val", "test"], default="val")
    ev.add_argument("--batch-size", type=_positive(int), default=None,
                    help="windows per batch (default: about 16K tokens per batch)")
    ev.add_argument("--seq-len", type=_positive(int), default=None,
                    help="window length (default: the training --seq-len)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", action="store_true")

    gen = sub.add_parser("generate", help="sample bytes from a checkpoint")
    gen.add_argument("ckpt")
    gen.add_argument("--prompt", default="")
    gen.add_argument("--max-new-bytes", type=_positive(int), default=256)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="auto")

    sub.add_parser("info", help="versions, device, and the kernel backend of every op")

    # Experiment suites (bytelm.eval): each module declares its own arguments.
    for name, (module, help_text) in EXPERIMENTS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    return parser


EXPERIMENTS = {
    "compare": ("bytelm.eval.compare", "BPE against raw bytes on matched data, in bits per byte"),
    "noise": ("bytelm.eval.noise", "noise-padding experiments at redundancy factor k"),
    "robustness": ("bytelm.eval.robustness", "character- and base-level corruption of checkpoints"),
    "synth": ("bytelm.eval.synthetic", "selective copying, induction heads and MQAR"),
}


def cmd_experiment(args) -> None:
    importlib.import_module(EXPERIMENTS[args.command][0]).main(args)


def cmd_train(args) -> None:
    import json

    from bytelm.train.config import TrainConfig
    from bytelm.train.trainer import train

    cfg = TrainConfig(data=args.data, model=args.model, preset=args.preset,
                      tokenizer=args.tokenizer, bpe_vocab=args.bpe_vocab, seq_len=args.seq_len,
                      batch_size=args.batch_size, grad_accum=args.grad_accum, steps=args.steps,
                      lr=args.lr, warmup=args.warmup, eval_every=args.eval_every,
                      save_every=args.save_every, seed=args.seed, device=args.device,
                      out=args.out, cache_dir=args.cache_dir, keep_case=args.keep_case,
                      field=args.field,
                      model_overrides=None if args.dropout is None else {"dropout": args.dropout})
    result = train(cfg, resume=args.resume)
    if args.json:
        print(json.dumps(result))


def cmd_eval(args) -> None:
    import json

    import numpy as np

    from bytelm.data import load_corpus
    from bytelm.infer.load import load_model
    from bytelm.train.config import resolve_device
    from bytelm.train.evaluate import evaluate, split_from_bytes
    from bytelm.train.trainer import EVAL_TOKENS_PER_BATCH

    device = resolve_device(args.device)
    model, codec, config = load_model(args.ckpt, device)
    corpus = load_corpus(args.data, cache_dir=args.cache_dir, keep_case=args.keep_case,
                         field=args.field)
    raw = corpus.split(args.split)
    split = split_from_bytes(codec, np.asarray(raw.tokens), raw.doc_starts, args.split)
    seq_len = args.seq_len or config["train"]["seq_len"]
    batch_size = args.batch_size or max(1, EVAL_TOKENS_PER_BATCH // seq_len)
    result = evaluate(model, split, codec, seq_len, batch_size, device)
    print(f"{args.split} of {args.data}: {result['bits_per_byte']:.4f} bits/byte over "
          f"{result['bytes']:,} bytes ({result['tokens']:,} tokens)")
    if args.json:
        print(json.dumps(result))


def cmd_generate(args) -> None:
    import sys

    import numpy as np

    from bytelm.infer.generate import Utf8Stream, generate
    from bytelm.infer.load import load_model
    from bytelm.train.config import resolve_device

    device = resolve_device(args.device)
    model, codec, config = load_model(args.ckpt, device)
    allowed = np.asarray(config["alphabet"]) if codec.name == "byte" else None
    out = Utf8Stream(sys.stdout)
    out(args.prompt.encode())
    generate(model, codec, args.prompt.encode(), args.max_new_bytes,
             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
             allowed_ids=allowed, on_bytes=out)
    out.close()
    sys.stdout.write("\n")


def cmd_info(args) -> None:
    import platform

    import numpy
    import torch

    import bytelm
    from bytelm.kernels import kernel_backends

    print(f"bytelm {bytelm.__version__}, python {platform.python_version()}, "
          f"torch {torch.__version__}, numpy {numpy.__version__}")
    try:
        import triton
        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed (reference kernels only)")
    if torch.cuda.is_available():
        device = "cuda"
        print(f"device: cuda, {torch.cuda.get_device_name()}")
    else:
        device = "cpu"
        print(f"device: cpu, {torch.get_num_threads()} threads")
    for op, backend in kernel_backends(device).items():
        print(f"  {op:24s} {backend}")


def cmd_data_stats(args) -> None:
    from bytelm.data import load_corpus
    from bytelm.data.stats import corpus_stats, print_stats

    corpus = load_corpus(args.data, tokenizer=args.tokenizer, bpe_vocab=args.bpe_vocab,
                         cache_dir=args.cache_dir, keep_case=args.keep_case, field=args.field)
    print_stats(corpus_stats(corpus), args.json)


COMMANDS = {("data", "stats"): cmd_data_stats, ("train", None): cmd_train,
            ("eval", None): cmd_eval, ("generate", None): cmd_generate, ("info", None): cmd_info,
            **{(name, None): cmd_experiment for name in EXPERIMENTS}}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    key = (args.command, getattr(args, f"{args.command}_command", None))
    command = COMMANDS.get(key) or COMMANDS[(args.command, None)]
    return run_reporting_errors("bytelm", command, args)


if __name__ == "__main__":
    sys.exit(main())
