"""Ship a finished bridge training run: the bridges, their evaluation and a steering experiment.

    python scripts/ship_bridges.py runs/bridges-pygen-2l-128 --config configs/bridges-pygen-2l-128.yaml
    python scripts/ship_bridges.py runs/pygen-sparse-2l-128-bridged-w03 --config configs/pygen-sparse-2l-128-bridged-w03.yaml \
        --sparse sparse-pygen-2l-128-bridged

The run is a post-hoc one (``sparselens bridges train``) or a sparse model trained from scratch
with its bridges (``sparselens train`` with a ``bridge:`` section); for the latter ``--sparse``
names the run's model as shipped (scripts/ship_model.py), which the bridges are then bound to.

Writes ``sparselens/pretrained/bridges-pygen-2l-128/`` (the bridges, the run's config and
``metrics.jsonl``, ``evaluation.{json,md}``, ``steering.{json,md}``, the circuit steered through,
and a ``README.md`` card) and the two plots to ``docs/images/``. The evaluation reads held-out
sequences of the run's own validation split; the steering prunes the sparse model on
``single_double_quote`` to the paper's target 0.15 (the demo's settings), takes the circuit's
residual channel at ``--site`` whose value at the read position moves most between the A and B
prompts, and steers the dense model through it on test pairs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import yaml

from sparselens import HookedSparseTransformer, PruneConfig, prune
from sparselens.bridges import Bridges, BridgeTrainConfig, circuit_residual_channels, evaluate_bridges, most_differing_channel, steer
from sparselens.demo import DEMO_PRUNE
from sparselens.files import write_text_atomic
from sparselens.interventions import pretraining_means
from sparselens.pretrained import SHIPPED_DIR
from sparselens.tasks import get_task
from sparselens.train import load_tokens

ROOT = Path(__file__).resolve().parents[1]


def _kl_sites_phrase(per_step: int | None) -> str:
    """How many sites' KL terms each step of a bridged run had (``bridge.kl_sites_per_step``)."""
    if per_step is None:
        return "every site's KL terms every step"
    return f"the KL terms of {per_step} site{'s' if per_step > 1 else ''} drawn per step"


def run_config(run: Path, sparse: str | None) -> tuple[BridgeTrainConfig, str, str]:
    """``(cfg, how, command)``: the run's bridge config (its sparse model ``sparse`` when given), how
    the bridges were trained and the command that trained them (``{config}`` for the config file)."""
    train_cfg = yaml.safe_load((run / "config.yaml").read_text())
    if "bridge" not in train_cfg:  # a post-hoc run: config.yaml is its BridgeTrainConfig
        cfg = BridgeTrainConfig.from_yaml(run / "config.yaml")
        how = f"trained post hoc (both models frozen, init {cfg.init!r})"
        command = "sparselens bridges train --config {config}"
    else:
        cfg = BridgeTrainConfig.from_yaml(run / "bridges" / "train_config.yaml")
        spec = train_cfg["bridge"]
        start = "from an earlier stage's model and bridges" if train_cfg.get("init") else "from scratch"
        how = (f"trained with the sparse model ({start}) next to the frozen dense one, the paper's setup (bridge "
               f"weight {spec.get('weight', 1.0)}, {_kl_sites_phrase(spec.get('kl_sites_per_step'))})")
        command = "sparselens train --config {config}"
    if sparse is not None:
        cfg.sparse = sparse
    elif "bridge" in train_cfg:
        raise SystemExit("a from-scratch bridged run: name its shipped model with --sparse (scripts/ship_model.py first)")
    return cfg, how, command


def card(
    name: str, cfg: BridgeTrainConfig, how: str, command: str, config: Path, metrics: list[dict], evaluation, steering, circuit
) -> str:
    beats = evaluation.beats_baselines()
    last = [m for m in metrics if m["event"] == "train"][-1]
    records = [m for m in metrics if m["event"] == "train"]
    seconds = sum(m.get("seconds_per_step", 0.0) * (m["step"] - before["step"]) for before, m in zip(records, records[1:]))
    stages_note = ""
    if (SHIPPED_DIR / cfg.sparse / "metrics-stage1.jsonl").is_file():
        stages_note = (f" That was the last stage of several; the sparse model's card,\n"
                       f"`sparselens/pretrained/{cfg.sparse}/README.md`, lists every stage's command and log.")
    return f"""# {name}

Bridges between the shipped loss-matched pair `{cfg.dense}` (dense) and `{cfg.sparse}` (weight-sparse):
per site (the embedding output, before each attention block and each MLP, the final residual) an
encoder `f_i(h) = AbsTopK(h W_enc + b_enc)` (dense -> sparse; encoder_afrac {cfg.encoder_afrac!r}) and a
linear decoder `g_i` (sparse -> dense), {how}, on this project's own CPU machine (2 cores, one
thread) with

    {command.format(config=config.as_posix())}

(`train_config.yaml` here is that file): {last['step']} steps of {cfg.batch_size} sequences of generated Python,
about {seconds / 60:.0f} minutes. `metrics.jsonl` is the run's own log.{stages_note}

Load them with `Bridges.from_pretrained("{name}", dense=dense, sparse=sparse)`.

## Held-out evaluation

`evaluation.md` / `evaluation.json` (`evaluate_bridges` on {evaluation.n_tokens:,} tokens of the run's validation
split, never trained on): beats both baselines at {sum(beats)} of {len(beats)} sites.

{evaluation.table()}

## Steering

`steering.md` / `steering.json`: the dense model steered through sparse channel {steering.channel} at
{steering.site.label}, the channel of the `single_double_quote` circuit (`circuit.json`, {circuit.n_nodes} nodes,
pruned to target 0.15 with mean ablation) that moves most between the A and B prompts.

{steering.table()}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the finished run's out_dir")
    parser.add_argument("--config", type=Path, required=True, help="the config the run was trained with (repository-relative)")
    parser.add_argument("--name", default="bridges-pygen-2l-128")
    parser.add_argument("--sparse", help="a from-scratch bridged run's sparse model, as shipped (its name)")
    parser.add_argument("--site", default="L1.resid_pre", help="the bridge site to steer at")
    parser.add_argument("--eval-seqs", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=64, help="test pairs of the steering experiment")
    args = parser.parse_args()
    torch.manual_seed(0)

    cfg, how, command = run_config(args.run, args.sparse)
    dense = HookedSparseTransformer.from_pretrained(cfg.dense)
    sparse = HookedSparseTransformer.from_pretrained(cfg.sparse)
    bridges = Bridges.from_pretrained(args.run / "bridges", dense=dense, sparse=sparse)
    out = SHIPPED_DIR / args.name
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    bridges.save_pretrained(out)
    shutil.copyfile(args.config, out / "train_config.yaml")
    shutil.copyfile(args.run / "metrics.jsonl", out / "metrics.jsonl")

    splits = load_tokens(cfg.data, sparse.cfg.d_vocab, min(dense.cfg.n_ctx, sparse.cfg.n_ctx), cfg.seed)
    evaluation = evaluate_bridges(dense, sparse, bridges, splits.val[: args.eval_seqs])
    write_text_atomic(out / "evaluation.json", json.dumps(evaluation.to_dict(), indent=1))
    write_text_atomic(out / "evaluation.md", evaluation.table() + "\n")
    evaluation.plot(images / "bridges-evaluation.png")
    print(evaluation.table())

    task = get_task("single_double_quote", tokenizer=sparse.tokenizer)
    circuit = prune(sparse, task, 0.15, PruneConfig(ablation="mean", **DEMO_PRUNE), means=pretraining_means(sparse))
    circuit.save(out / "circuit.json")
    site = bridges.site(args.site)
    batch = task.batch(n=args.pairs, split="test", seed=0)
    channel = most_differing_channel(circuit, sparse, site, batch)
    channels = circuit_residual_channels(circuit, sparse, site)
    print(f"circuit: {circuit.n_nodes} nodes; residual channels at {site.label}: {channels}; steering channel {channel}")
    steering = steer(dense, sparse, bridges, site, channel, batch, reference_tokens=splits.val[:64])
    write_text_atomic(out / "steering.json", json.dumps(steering.to_dict(), indent=1))
    write_text_atomic(out / "steering.md", steering.table() + "\n")
    steering.plot(images / "bridges-steering.png")
    print(steering.table())

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    write_text_atomic(out / "README.md", card(args.name, cfg, how, command, args.config, metrics, evaluation, steering, circuit))
    print(f"shipped to {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
