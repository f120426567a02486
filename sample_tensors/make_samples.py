"""Make the bundled sample tensors, deterministically (``python sample_tensors/make_samples.py``).

Small, realistic shapes and distributions, under 5 MB in all:

- ``weights.safetensors``: two linear weights (float32 and bfloat16) with a few
  outlier input channels, as in trained LLM layers, and a LayerNorm gain.
- ``activations.safetensors``: a (tokens, hidden) activation with heavy tails and
  a handful of massive-activation channels.
- ``gradients.safetensors``: small-magnitude weight gradients (~1e-5).
- ``sharded/``: a tiny two-shard checkpoint with ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


def _weight(g: torch.Generator, out_f: int, in_f: int, outlier_cols: int) -> torch.Tensor:
    w = torch.randn(out_f, in_f, generator=g) * (in_f**-0.5)
    cols = torch.randperm(in_f, generator=g)[:outlier_cols]
    w[:, cols] *= 12.0  # outlier input channels
    return w


def make(out: Path = HERE) -> None:
    g = torch.Generator().manual_seed(20261130)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "layers.0.attn.q_proj.weight": _weight(g, 256, 256, 4),
            "layers.0.mlp.up_proj.weight": _weight(g, 512, 256, 3).to(torch.bfloat16),
            "layers.0.input_layernorm.weight": 1.0 + 0.1 * torch.randn(256, generator=g),
        },
        out / "weights.safetensors",
        metadata={"made_by": "sample_tensors/make_samples.py"},
    )
    # Gaussian core plus a cubed-Gaussian term for heavy tails (kurtosis well above 3).
    act = torch.randn(128, 256, generator=g) * 0.5 + 0.3 * torch.randn(128, 256, generator=g).pow(3)
    act[:, torch.randperm(256, generator=g)[:3]] *= 60.0  # massive-activation channels
    save_file({"layers.0.mlp.down_proj.input": act.to(torch.bfloat16)}, out / "activations.safetensors")
    grad = torch.randn(256, 256, generator=g) * 1e-5
    grad[torch.rand(256, 256, generator=g) < 0.001] *= 50.0
    save_file({"layers.0.attn.q_proj.weight.grad": grad}, out / "gradients.safetensors")

    shard_dir = out / "sharded"
    shard_dir.mkdir(exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {
            "embed_tokens.weight": torch.randn(512, 128, generator=g) * 0.02,
            "layers.0.self_attn.o_proj.weight": _weight(g, 128, 128, 2),
        },
        "model-00002-of-00002.safetensors": {
            "layers.0.mlp.gate_proj.weight": _weight(g, 256, 128, 2),
            "lm_head.weight": torch.randn(512, 128, generator=g) * 0.02,
        },
    }
    weight_map = {}
    total = 0
    for fname, tensors in shards.items():
        save_file(tensors, shard_dir / fname)
        for k, t in tensors.items():
            weight_map[k] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    make()
