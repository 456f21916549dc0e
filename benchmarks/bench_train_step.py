"""Cost of GASP's heads + geometric losses: full GASP step vs the same model's language-only LoRA step.

Both steps run in one process on the same model, LoRA, optimizer and input (one sequence of F frames):
forward, backward, clip, AdamW step. The GASP step also hooks every supervised layer, runs the heads and
both losses (per layer under activation checkpointing, see gasp.training.objective); the LM step passes
no targets and leaves the heads out (``GaspObjective.without_heads``: no gradient, no AdamW update;
their parameters and optimizer state exist in both).

Default: a mid-size Qwen2.5-VL with 7B-like width ratios (LLM hidden 1024, 8 layers, 8 heads / 2 KV heads,
MLP 5.3x like Qwen2.5-VL-7B's 18944/3584, d_emb 256, LoRA rank 128), 8 frames of 16x16 tokens.

Time: median over ``--reps`` alternating repetitions after one warm-up step of each.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the torch profiler's allocator
events (``profile_memory=True``): every allocation and free of the step in time order, whose running sum
peaks at the step's transient peak (activations, gradients, temporaries). ``peak_total`` adds the
persistent tensors (parameters + optimizer state) held before the step. RSS is not used: glibc keeps
freed pages, so RSS never reports a second step's peak.

Prints one JSON object; ``time_ratio`` and ``peak_total_ratio`` are checked against the goals
(<= 1.15 and <= 1.10).

  python benchmarks/bench_train_step.py --threads 2
  python benchmarks/bench_train_step.py --preset qwen2.5-vl-7b --frames 8 --grid 16 16 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import numpy as np
import torch


def _build(args):
    from gasp import constants as C
    from gasp.config import TrainConfig
    from gasp.models import from_preset
    from gasp.models.heads import CorrespondenceHeads
    from gasp.training.objective import GaspObjective
    from gasp.training.setup import apply_lora, build_optimizer

    torch.manual_seed(0)
    if args.preset:
        adapter = from_preset(args.preset)
    else:
        adapter = from_preset(
            "tiny-qwen2.5-vl",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            num_kv_heads=args.kv_heads,
            intermediate_size=args.intermediate,
            max_tokens=max(4096, 2 * args.grid[0] * args.grid[1]),
        )
    dtype = torch.bfloat16 if args.device == "cuda" else None
    if dtype is not None:
        adapter.model.to(dtype)
    cfg = TrainConfig(lora_rank=args.lora_rank, d_emb=args.d_emb, mixed_precision="no", max_steps=10)
    apply_lora(adapter, cfg)
    if args.gradient_checkpointing:
        adapter.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    heads = CorrespondenceHeads.from_adapter(adapter, "all", args.d_emb)
    obj = GaspObjective(
        adapter.model,
        adapter.attention_inputs(),
        heads,
        cfg.tau,
        cfg.depth_eps,
        cfg.lambda_corr,
        cfg.lambda_depth,
    ).to(args.device)
    obj.train()
    opt = build_optimizer(obj, cfg)

    rng = np.random.default_rng(0)
    h, w = adapter.image_size_for_grid(tuple(args.grid))
    frames = rng.integers(0, 255, (args.frames, h, w, 3), dtype=np.uint8)
    answer = "A room about 6.5 m by 5.2 m with a tiled floor, a red crate on the left and a table ahead."
    batch = adapter.build_inputs([frames], ["These are frames of a video. Describe the scene."], [answer])
    n = args.grid[0] * args.grid[1]
    targets = {
        C.MATCH_INDEX: torch.from_numpy(rng.integers(0, n, (1, args.frames, n))),
        C.MATCH_VALID: torch.from_numpy(rng.random((1, args.frames, n)) > 0.3),
        C.MATCH_DEPTH: torch.from_numpy(rng.uniform(0.5, 5, (1, args.frames, n)).astype(np.float32)),
        C.TOKEN_DEPTH: torch.from_numpy(rng.uniform(0.5, 5, (1, args.frames, n)).astype(np.float32)),
    }
    inputs = {k: v.to(args.device) for k, v in batch.inputs.items()}
    if dtype is not None:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    targets = {k: v.to(args.device) for k, v in targets.items()}
    positions = batch.visual_positions.to(args.device)
    trainable = [p for p in obj.parameters() if p.requires_grad]

    def step(geometric: bool) -> None:
        with contextlib.nullcontext() if geometric else obj.without_heads():
            loss, _ = obj(inputs, positions, targets if geometric else None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    persistent = sum(p.numel() * p.element_size() for p in obj.parameters())
    return step, obj, opt, inputs, persistent


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(step, geometric: bool, device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    step(geometric)
    _sync(device)
    return time.perf_counter() - t


def _peak_bytes(step, geometric: bool, device: str) -> int:
    """Transient peak of one step above what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(geometric)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(geometric)
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))  # frees are negative
    running = peak = 0
    for _, size in sorted(allocations):
        running += size
        peak = max(peak, running)
    return peak


def _optimizer_bytes(opt) -> int:
    return sum(
        t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="a gasp model preset instead of the mid-size model")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=5416, help="MLP width (default 5.29x hidden, as 7B)")
    p.add_argument("--d-emb", type=int, default=256)
    p.add_argument("--lora-rank", type=int, default=128)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--grid", type=int, nargs=2, default=(16, 16))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    step, obj, opt, inputs, params_bytes = _build(args)
    for geometric in (True, False):  # warm-up; creates the optimizer state
        step(geometric)
    times = {True: [], False: []}
    for _ in range(args.reps):
        for geometric in (False, True):
            times[geometric].append(_timed(step, geometric, args.device))
    persistent = params_bytes + _optimizer_bytes(opt)
    peak = {g: _peak_bytes(step, g, args.device) for g in (False, True)}
    t_gasp, t_lm = statistics.median(times[True]), statistics.median(times[False])
    result = {
        "device": args.device,
        "model": args.preset or f"qwen2.5-vl hidden {args.hidden} x {args.layers} layers",
        "sequence_tokens": int(inputs["input_ids"].shape[1]),
        "visual_tokens": args.frames * args.grid[0] * args.grid[1],
        "d_emb": args.d_emb,
        "gradient_checkpointing": args.gradient_checkpointing,
        "threads": args.threads,
        "step_time_s": {"gasp": t_gasp, "lm_only": t_lm},
        "peak_step_bytes": {"gasp": peak[True], "lm_only": peak[False]},
        "persistent_bytes": persistent,
        "time_ratio": t_gasp / t_lm,
        "peak_step_ratio": peak[True] / peak[False],
        "peak_total_ratio": (persistent + peak[True]) / (persistent + peak[False]),
    }
    result["goals_met"] = {
        "time<=1.15": result["time_ratio"] <= 1.15,
        "memory<=1.10": result["peak_total_ratio"] <= 1.10,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
