"""``sparselens summary``: build (or load) a model and print its hook points and node sites."""

from __future__ import annotations

import argparse

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens summary --model sparse-pygen-2l-128
sparselens summary --n-layers 2 --d-model 128
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a saved model directory or registered name (default: a fresh model)")
    parser.add_argument("--n-layers", type=int, default=4, help="layers of the fresh model")
    parser.add_argument("--d-model", type=int, default=256, help="residual width of the fresh model")
    parser.add_argument("--n-ctx", type=int, default=256, help="context length of the fresh model")


def run(args: argparse.Namespace) -> int:
    from sparselens import HookedSparseTransformer, SparseTransformerConfig

    if args.model:
        model = HookedSparseTransformer.from_pretrained(args.model)
    else:
        cfg = SparseTransformerConfig(n_layers=args.n_layers, d_model=args.d_model, n_ctx=args.n_ctx, seed=0, device="cpu")
        model = HookedSparseTransformer(cfg)
    print(model.summary())
    return 0
