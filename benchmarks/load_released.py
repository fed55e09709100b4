"""Peak memory of loading a released-format checkpoint: the old way (torch.load into memory, then
copy into a freshly built model) against the new one (``load_released``: memory-mapped, and the
mapped tensors become the parameters).

Writes a synthetic released checkpoint (``beeg_config.json`` + ``final_model.pt``, nanoGPT keys,
float32) of about ``--size-mb``, then loads it in a fresh process per way and reports the peak
resident set size *added by the load* (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``, minus the resident size after the imports) divided by the file size.
File-backed pages of the mapping count in it, so 1.0 means one copy of the weights in memory.

    python benchmarks/load_released.py                 # about 400 MB
    python benchmarks/load_released.py --size-mb 1700  # the size of csp_yolo2
    python benchmarks/load_released.py --json          # one JSON line per way (used by the test)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WAYS = ("old", "new", "new-bf16")

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from sparselens.model.checkpoint import load_state_dict_checked
from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
from sparselens.pretrained.released import load_released, released_config, released_state_dict

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

way, path = sys.argv[1], Path(sys.argv[2])
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
base = status("VmRSS")
start = time.perf_counter()
if way == "old":  # what load_released did before: read the whole file, build the model, copy into it
    sd = torch.load(path / "final_model.pt", map_location="cpu", weights_only=True)
    cfg = released_config(json.loads((path / "beeg_config.json").read_text()), has_wpe="transformer.wpe.weight" in sd)
    model = HookedSparseTransformer(cfg)
    load_state_dict_checked(model, released_state_dict(sd, cfg), source=str(path))
    del sd
else:
    model = load_released(path, tokenizer=None, dtype=torch.bfloat16 if way == "new-bf16" else None)
seconds = time.perf_counter() - start
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"way": way, "peak_added_bytes": status("VmHWM") - base, "rss_after_bytes": status("VmRSS") - base,
                  "param_bytes": params, "seconds": round(seconds, 2)}))
"""


def write_checkpoint(folder: Path, size_mb: float, d_model: int = 1024, seed: int = 0) -> Path:
    """A random float32 released-format checkpoint of about ``size_mb`` MB in ``folder``."""
    import torch

    n_layer = max(1, round(size_mb * 2**20 / (4 * 12 * d_model * d_model)))
    vocab, block, n_head = 2048, 256, d_model // 64
    gen = torch.Generator().manual_seed(seed)

    def w(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    beeg = {"block_size": block, "vocab_size": vocab, "n_layer": n_layer, "n_head": n_head, "d_head": 64,
            "d_model": d_model, "bias": True, "rms_norm": True, "residual_activation_type": "identity",
            "activation_type": "gelu", "afrac": 0.25, "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out",
            "tied_unembed": False, "tokenizer_name": "tinypython_2k", "n_mlp": 4 * d_model,
            "enable_bigram_table": False, "d_pos_emb": None, "sink": True, "flash": True}
    sd = {"transformer.wte.weight": w(vocab, d_model), "transformer.wpe.weight": w(block, d_model),
          "transformer.ln_f.weight": torch.ones(d_model), "lm_head.weight": w(vocab, d_model),
          "final_logits_bias": torch.zeros(vocab)}
    for l in range(n_layer):
        p = f"transformer.h.{l}."
        sd.update({
            p + "ln_1.weight": torch.ones(d_model), p + "ln_2.weight": torch.ones(d_model),
            p + "attn.c_attn.weight": w(3 * d_model, d_model), p + "attn.c_attn.bias": torch.zeros(3 * d_model),
            p + "attn.c_proj.weight": w(d_model, d_model), p + "attn.c_proj.bias": torch.zeros(d_model),
            p + "mlp.c_fc.weight": w(4 * d_model, d_model), p + "mlp.c_fc.bias": torch.zeros(4 * d_model),
            p + "mlp.c_proj.weight": w(d_model, 4 * d_model), p + "mlp.c_proj.bias": torch.zeros(d_model),
            p + "attn.attn_imp.sink_logit": torch.zeros(n_head),
        })
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "beeg_config.json").write_text(json.dumps(beeg))
    torch.save(sd, folder / "final_model.pt")
    return folder


def measure(folder: Path, way: str) -> dict:
    """Load ``folder`` the given way in a fresh process; its JSON report plus the file size."""
    out = subprocess.run([sys.executable, "-c", CHILD, way, str(folder)], check=True, capture_output=True, text=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["file_bytes"] = (folder / "final_model.pt").stat().st_size
    report["peak_over_file"] = round(report["peak_added_bytes"] / report["file_bytes"], 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=400)
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--dir", type=Path, help="write the checkpoint here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(args.dir or Path(tmp) / "released", args.size_mb)
        size = (folder / "final_model.pt").stat().st_size
        if not args.json:
            print(f"checkpoint {folder / 'final_model.pt'}: {size / 2**20:.0f} MiB")
            print(f"{'way':<10}{'peak RSS added':>16}{'/ file':>9}{'RSS after':>12}{'seconds':>9}")
        for way in args.ways:
            r = measure(folder, way)
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{way:<10}{r['peak_added_bytes'] / 2**20:>12.0f} MiB{r['peak_over_file']:>9.2f}"
                      f"{r['rss_after_bytes'] / 2**20:>8.0f} MiB{r['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
