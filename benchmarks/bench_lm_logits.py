"""Peak memory of the language loss: LM head at the supervised positions only (gasp's
``GaspObjective``) against full-vocabulary fp32 logits at every position (the computation before).

Same model, LoRA and input in one process; one LM-only training step (forward, backward) each.
Default: Qwen2.5-VL-7B's vocabulary (152,064) on a small LLM (hidden 256, 2 layers) so that the
logits dominate as they do at 7B, 8 frames of 12x12 tokens. Peak memory: the torch profiler's
allocator events on the CPU (``torch.cuda.max_memory_allocated`` on CUDA), as bench_train_step.py.
Prints one JSON object with both peaks and their ratio.

  python benchmarks/bench_lm_logits.py [--frames 8] [--grid 12 12] [--vocab 152064]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_step import _peak_bytes  # noqa: E402


def main() -> None:
    from gasp.config import TrainConfig
    from gasp.models import from_preset
    from gasp.training.objective import full_logits_lm_loss
    from gasp.training.setup import build_objective

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--grid", type=int, nargs=2, default=(12, 12))
    p.add_argument("--vocab", type=int, default=152064)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    adapter = from_preset("tiny-qwen2.5-vl", hidden_size=args.hidden, vocab_size=args.vocab, max_tokens=8192)
    objective, _ = build_objective(adapter, TrainConfig(lora_rank=16, mode="lm_only", max_steps=1))
    objective.to(args.device).train()
    h, w = adapter.image_size_for_grid(tuple(args.grid))
    frames = np.random.default_rng(0).integers(0, 255, (args.frames, h, w, 3), dtype=np.uint8)
    answer = "A room about 6.5 m by 5.2 m with a tiled floor, a red crate on the left and a table ahead."
    batch = adapter.build_inputs([frames], ["Describe the scene."], [answer])
    inputs = {k: v.to(args.device) for k, v in batch.inputs.items()}
    positions = batch.visual_positions.to(args.device)

    def labels_only(_geometric: bool) -> None:
        loss, _ = objective(inputs, positions, None)
        loss.backward()
        objective.zero_grad(set_to_none=True)

    def full(_geometric: bool) -> None:
        full_logits_lm_loss(objective.model, inputs).backward()
        objective.zero_grad(set_to_none=True)

    for fn in (labels_only, full):  # warm-up
        fn(False)
    peak = {
        "full_logits": _peak_bytes(full, False, args.device),
        "labels_only": _peak_bytes(labels_only, False, args.device),
    }
    supervised = int((inputs["labels"][:, 1:] != -100).sum())
    result = {
        "device": args.device,
        "sequence_tokens": int(inputs["input_ids"].shape[1]),
        "supervised_tokens": supervised,
        "vocab": args.vocab,
        "peak_step_bytes": peak,
        "peak_ratio_labels_only_over_full": peak["labels_only"] / peak["full_logits"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
