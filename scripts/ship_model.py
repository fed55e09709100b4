"""Copy a finished training run into the package as a shipped model.

    python scripts/ship_model.py runs/sparse-2l-256 sparse-2l-256 --config configs/sparse-2l-256.yaml

Writes ``sparselens/pretrained/NAME/``: the final weights re-saved in the current checkpoint format
(weight-sparse matrices stored compactly), the tokenizer, the run's config (``train_config.yaml``),
``metrics.jsonl`` and ``curves.png``, the node means used for mean ablation, and a ``README.md``
card whose numbers are read from the run's own logs. Register the name in
``sparselens/pretrained/__init__.py`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from sparselens import HookedSparseTransformer
from sparselens.interventions.means import MEANS_FILE, pretraining_means
from sparselens.pretrained import SHIPPED_DIR


def card(name: str, model: HookedSparseTransformer, config: Path, metrics: list[dict], description: str) -> str:
    """The model card: what it is, the command that made it, and its final numbers from the logs."""
    cfg = model.cfg
    last_train = [m for m in metrics if m["event"] == "train"][-1]
    last_eval = [m for m in metrics if m["event"] == "eval"][-1]
    weights = [p for n, p in model.named_parameters() if p.ndim == 2 and "bigram" not in n]
    nonzero = sum(int((p != 0).sum()) for p in weights)
    total = sum(p.numel() for p in weights)
    sites = ", ".join(cfg.abstopk_sites) if cfg.afrac is not None else "none"
    return f"""# {name}

{description} {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads of d_head {cfg.d_head},
d_mlp {cfg.d_mlp}, context {cfg.n_ctx}, AbsTopK {cfg.afrac} at {sites}, the shipped 2048-token Python
tokenizer. {nonzero:,} of {total:,} matrix weights nonzero ({nonzero / total:.4f}). Trained on this
project's own CPU machine (2 cores, no GPU) on the Python standard library's `.py` files
(`sparselens.data.load_corpus()`, about 10M training tokens) with

    sparselens train --config {config.as_posix()}

(`train_config.yaml` here is that file). Final step {last_train['step']}, {last_train['tokens']:,} tokens
seen; validation loss {last_eval['val_loss']:.3f} nats per token. `metrics.jsonl` and `curves.png` are
the run's own logs. `node_means.safetensors` holds the node means over 32 x 16 corpus sequences used
for mean ablation (`sparselens.interventions.pretraining_means`).

Load it with `HookedSparseTransformer.from_pretrained("{name}")`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run's out_dir (holds model/, config.yaml, metrics.jsonl)")
    parser.add_argument("name", help="the shipped model's name (its folder in sparselens/pretrained)")
    parser.add_argument("--config", type=Path, required=True, help="the config file the run was started with")
    parser.add_argument("--description", default="", help="first sentence of the card")
    args = parser.parse_args()

    model = HookedSparseTransformer.from_pretrained(args.run / "model")
    dest = SHIPPED_DIR / args.name
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(dest)
    shutil.copy(args.config, dest / "train_config.yaml")
    for file in ("metrics.jsonl", "curves.png"):
        shutil.copy(args.run / file, dest / file)
    metrics = [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()]
    shipped = HookedSparseTransformer.from_pretrained(dest)
    with torch.no_grad():  # the means over the model's own corpus, shipped next to it
        pretraining_means(shipped, save_to=dest / MEANS_FILE)
    (dest / "README.md").write_text(card(args.name, shipped, args.config, metrics, args.description))
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(f"shipped {args.name} in {dest} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
