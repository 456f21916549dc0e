"""GPU readiness check of GASP training at the paper's scale (random weights, no downloads).

On one GPU (80-140 GB), with the Qwen2.5-VL-7B architecture (gasp preset ``qwen2.5-vl-7b``: 28 LLM
layers of width 3584, the 32-layer ViT, 152k vocabulary) in bf16 with fp32 LoRA (rank 128) and fp32
heads on all 28 layers (d_emb 256), F = 16 frames of 24x24 tokens (9,216 visual tokens), it prints:

1. the GASP step (LM + correspondence + depth losses) against the LM-only LoRA step (same model,
   heads out of the forward: ``GaspObjective.without_heads``), time and peak memory, without and with
   gradient checkpointing;
2. the same under FSDP2 on one process (torch ``fully_shard`` with the units and precision policy
   that accelerate's FSDP2 gets in training: ``GaspObjective._no_split_modules``,
   ``gasp.training.sharding.mixed_precision_policy``);
3. the largest F x grid whose GASP step (gradient checkpointing on) fits in memory.

One step = forward, backward, clipping, AdamW step, under bf16 autocast. Time: median of ``--reps``
alternating repetitions after one warm-up step of each kind. Peak memory: CUDA
``max_memory_allocated`` during the step (on the CPU, the torch profiler's allocator events, as
bench_train_step.py). Goals (issue #11): GASP / LM-only <= 1.05 in time and peak memory.

``--dry-run`` runs the same code on the CPU with a shrunk model (hidden 64, 2 layers, small ViT, F 3,
4x4 tokens), to prove the script works without a GPU. Prints one JSON object.

  python benchmarks/gpu_check.py              # on the GPU machine, <= 8 minutes
  python benchmarks/gpu_check.py --dry-run    # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_step import _peak_bytes, _timed  # noqa: E402

GIB = 2**30
SHRUNK = dict(
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    vocab_size=1000,
    vision_hidden_size=32,
    vision_depth=2,
    vision_heads=2,
    vision_intermediate_size=64,
    fullatt_block_indexes=(1,),
    max_tokens=4096,
)


def _build(args, fsdp: bool):
    """Model (bf16 base, fp32 LoRA + heads) + optimizer on ``args.device``."""
    from gasp.config import TrainConfig
    from gasp.models import from_preset
    from gasp.training.setup import build_objective, build_optimizer

    torch.manual_seed(0)
    overrides = dict(SHRUNK) if args.dry_run else {"max_tokens": 65536}
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build the 7B weights directly in bf16 on the device
    try:
        with torch.device(args.device):
            adapter = from_preset("qwen2.5-vl-7b", **overrides)
    finally:
        torch.set_default_dtype(default)
    cfg = TrainConfig(
        model="qwen2.5-vl-7b",
        lora_rank=8 if args.dry_run else 128,
        d_emb=16 if args.dry_run else 256,
        mixed_precision="bf16",
        max_steps=10,
    )
    objective, _ = build_objective(adapter, cfg)
    objective.to(args.device)  # build_objective keeps LoRA and heads fp32, as in training
    if fsdp:
        _shard(objective, torch.device(args.device).type)
    objective.train()
    return adapter, objective, build_optimizer(objective, cfg)


def _shard(objective, device_type: str) -> None:
    """FSDP2 over this one process (inside ``_one_process_group``): one unit per
    ``_no_split_modules`` class, then the root, with training's precision policy (bf16 compute, fp32
    reduction, outputs as computed)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from gasp.training.sharding import mixed_precision_policy

    mesh = init_device_mesh(device_type, (1,))
    policy = mixed_precision_policy("bf16")
    names = set(objective._no_split_modules)
    for module in [m for m in objective.modules() if type(m).__name__ in names]:
        fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(objective, mesh=mesh, mp_policy=policy)


def _batch(adapter, frames: int, grid: tuple[int, int], device: str):
    from gasp import constants as C

    rng = np.random.default_rng(0)
    h, w = adapter.image_size_for_grid(grid)
    video = rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8)
    answer = "A room about 6.5 m by 5.2 m with a tiled floor, a red crate on the left and a table ahead."
    batch = adapter.build_inputs([video], ["These are frames of a video. Describe the scene."], [answer])
    n = grid[0] * grid[1]
    targets = {
        C.MATCH_INDEX: torch.from_numpy(rng.integers(0, n, (1, frames, n))),
        C.MATCH_VALID: torch.from_numpy(rng.random((1, frames, n)) > 0.3),
        C.MATCH_DEPTH: torch.from_numpy(rng.uniform(0.5, 5, (1, frames, n)).astype(np.float32)),
        C.TOKEN_DEPTH: torch.from_numpy(rng.uniform(0.5, 5, (1, frames, n)).astype(np.float32)),
    }
    inputs = {k: v.to(device) for k, v in batch.inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    return inputs, batch.visual_positions.to(device), {k: v.to(device) for k, v in targets.items()}


def _stepper(objective, optimizer, inputs, positions, targets, device: str):
    trainable = [p for p in objective.parameters() if p.requires_grad]
    device_type = torch.device(device).type

    def step(geometric: bool) -> None:
        lm_only = contextlib.nullcontext() if geometric else objective.without_heads()
        with lm_only, torch.autocast(device_type, dtype=torch.bfloat16):
            loss, _ = objective(inputs, positions, targets if geometric else None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _compare(adapter, objective, optimizer, args, checkpointing: bool) -> dict:
    """GASP vs LM-only step on the same model and batch."""
    model = adapter.model
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    try:
        inputs, positions, targets = _batch(adapter, args.frames, tuple(args.grid), args.device)
        step = _stepper(objective, optimizer, inputs, positions, targets, args.device)
        for geometric in (True, False):
            step(geometric)
        times = {True: [], False: []}
        for _ in range(args.reps):
            for geometric in (False, True):
                times[geometric].append(_timed(step, geometric, args.device))
        peak = {g: _peak_bytes(step, g, args.device) for g in (False, True)}
    except torch.OutOfMemoryError as exc:
        _free(args.device)
        return {"gradient_checkpointing": checkpointing, "oom": str(exc).splitlines()[0]}
    t_gasp, t_lm = statistics.median(times[True]), statistics.median(times[False])
    return {
        "gradient_checkpointing": checkpointing,
        "sequence_tokens": int(inputs["input_ids"].shape[1]),
        "step_time_s": {"gasp": t_gasp, "lm_only": t_lm},
        "peak_step_gib": {"gasp": peak[True] / GIB, "lm_only": peak[False] / GIB},
        "time_ratio": t_gasp / t_lm,
        "peak_ratio": peak[True] / max(1, peak[False]),
    }


def _largest(adapter, objective, optimizer, args) -> dict:
    """The largest F x grid (gradient checkpointing on) whose GASP step fits."""
    adapter.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.dry_run:
        candidates = [(3, (4, 4)), (4, (4, 4)), (4, (8, 8))]
    else:
        candidates = [
            (16, (24, 24)),
            (24, (24, 24)),
            (32, (24, 24)),
            (24, (32, 32)),
            (32, (32, 32)),
            (48, (32, 32)),
        ]
    fits, tried = None, []
    for frames, grid in candidates:
        try:
            inputs, positions, targets = _batch(adapter, frames, grid, args.device)
            step = _stepper(objective, optimizer, inputs, positions, targets, args.device)
            t = _timed(step, True, args.device)
            tried.append({"frames": frames, "grid": list(grid), "fits": True, "step_time_s": t})
            fits = {"frames": frames, "grid": list(grid), "visual_tokens": frames * grid[0] * grid[1]}
        except torch.OutOfMemoryError:
            tried.append({"frames": frames, "grid": list(grid), "fits": False})
            _free(args.device)
            break
        finally:
            inputs = positions = targets = step = None
            _free(args.device)
    return {"largest": fits, "tried": tried}


@contextlib.contextmanager
def _one_process_group(device: str):
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="shrunk model on the CPU (proves the script runs)")
    p.add_argument("--frames", type=int, default=None, help="F (default 16; dry run 3)")
    p.add_argument("--grid", type=int, nargs=2, default=None, help="token grid (default 24 24; dry run 4 4)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip-largest", action="store_true", help="skip the largest-F x grid search")
    args = p.parse_args()
    args.device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device; use --dry-run on the CPU")
    args.frames = args.frames or (3 if args.dry_run else 16)
    args.grid = args.grid or ((4, 4) if args.dry_run else (24, 24))
    started = time.perf_counter()
    result: dict = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run, shrunk model)",
        "model": "qwen2.5-vl-7b architecture" + (" shrunk" if args.dry_run else ""),
        "frames": args.frames,
        "grid": list(args.grid),
        "visual_tokens": args.frames * args.grid[0] * args.grid[1],
    }
    adapter, objective, optimizer = _build(args, fsdp=False)
    result["plain"] = [_compare(adapter, objective, optimizer, args, gc_on) for gc_on in (False, True)]
    if not args.skip_largest:
        result["largest_fit"] = _largest(adapter, objective, optimizer, args)
    adapter = objective = optimizer = None
    _free(args.device)
    with _one_process_group(args.device):
        adapter, objective, optimizer = _build(args, fsdp=True)
        result["fsdp_one_process"] = [
            _compare(adapter, objective, optimizer, args, gc_on) for gc_on in (False, True)
        ]
    result["goals"] = {
        f"{kind} gc={r['gradient_checkpointing']}": {
            "time<=1.05": r["time_ratio"] <= 1.05,
            "memory<=1.05": r["peak_ratio"] <= 1.05,
        }
        for kind in ("plain", "fsdp_one_process")
        for r in result[kind]
        if "oom" not in r
    }
    result["wall_s"] = time.perf_counter() - started
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
