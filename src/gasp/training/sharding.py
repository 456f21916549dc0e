"""FSDP2 for ``gasp train``.

On GPUs accelerate shards the objective (``accelerate launch --config_file configs/accelerate/fsdp.yaml``,
``fsdp_version: 2``): one FSDP unit per class named by ``GaspObjective._no_split_modules`` (the
model's decoder and vision layers, and each correspondence head), then the root.

On the CPU accelerate 1.15 does not: its state object only switches to FSDP for accelerator devices,
so an FSDP config launched with ``ACCELERATE_USE_CPU=1`` silently runs DDP (and FSDP1's
``sync_module_states`` stops at start-up with "no available devices"). When an FSDP config is
launched and accelerate fell back like that, gasp shards the objective itself with
:func:`shard_fsdp2`: the same units, the same mixed-precision policy and torch's ``fully_shard`` over
a gloo device mesh. That is how the CPU tests exercise sharded training, global clipping and
sharded checkpoints.

Mixed dtypes: with bf16 the frozen base weights are bf16 while LoRA and heads are fp32. FSDP2 keeps
each parameter's own dtype in its shard; as accelerate does, every trainable parameter is fp32 (the
optimizer's master copy) and ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` gathers
bf16 for compute and reduces gradients in fp32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
from torch import nn

log = logging.getLogger("gasp.train")


def fsdp_launched() -> bool:
    """Whether ``accelerate launch`` was given an FSDP config (it exports ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def needs_own_fsdp(accelerator) -> bool:
    """An FSDP config was launched but accelerate runs without FSDP (the CPU fallback)."""
    from accelerate.utils import DistributedType

    return fsdp_launched() and accelerator.distributed_type != DistributedType.FSDP


def process_group_handlers() -> list:
    """accelerate kwargs handlers for the process group: gloo for DeepSpeed on CPU processes.

    accelerate 1.15 picks a process-group backend for accelerator devices only. Launched with a
    DeepSpeed config on a machine without one, it lets DeepSpeed initialise the group but then
    counts one process of rank 0 in every process (all of them would write as the main process).
    Naming the backend (gloo) makes it read the real rank and world size from the group.
    """
    from accelerate.utils import InitProcessGroupKwargs

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if deepspeed and several and not torch.cuda.is_available():
        return [InitProcessGroupKwargs(backend="gloo")]
    return []


def mixed_precision_policy(mixed_precision: str):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    if low is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)


def shard_fsdp2(objective: nn.Module, mixed_precision: str, device_type: str = "cpu") -> nn.Module:
    """Shard ``objective`` in place over all processes with ``fully_shard`` (one unit per
    ``objective._no_split_modules`` class, then the root); returns it.

    Raises:
        ValueError: a class named in ``_no_split_modules`` is not in the model (nothing to wrap).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from gasp.training.setup import upcast_trainable

    names = set(objective._no_split_modules)
    upcast_trainable(objective)  # fp32 master weights for every trained parameter
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    policy = mixed_precision_policy(mixed_precision)
    units = [m for m in objective.modules() if type(m).__name__ in names]
    found = {type(m).__name__ for m in units}
    if "CorrespondenceHead" not in found:
        found.add("CorrespondenceHead")  # lm_only runs have no heads
    if found != names:
        raise ValueError(f"FSDP units {sorted(names - found)} are not in the model")
    for m in units:
        fully_shard(m, mesh=mesh, mp_policy=policy)
    fully_shard(objective, mesh=mesh, mp_policy=policy)
    log.info("FSDP2 (gasp, %s): %d units + root over %d processes", device_type, len(units), mesh.size())
    return objective


def full_norm(value) -> torch.Tensor | None:
    """A gradient norm as a plain tensor (FSDP2's clip returns a DTensor)."""
    if value is None:
        return None
    full = getattr(value, "full_tensor", None)
    return full() if callable(full) else torch.as_tensor(value)


def accelerate_shards(accelerator) -> bool:
    """Whether accelerate's engine shards parameters, gradients or optimizer state (FSDP, DeepSpeed)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def configure_deepspeed(accelerator, cfg) -> None:
    """Under DeepSpeed, set what its config leaves on ``auto`` from the train config.

    gasp's data stream is not a torch DataLoader, so accelerate cannot infer the micro-batch size
    (it refuses ``train_micro_batch_size_per_gpu: auto`` without a data loader): it is set to
    ``--batch-size``, gradient accumulation to ``--grad-accum`` and clipping to ``--grad-clip``. An
    explicit value in the DeepSpeed config that disagrees raises ConfigError.
    """
    from accelerate.utils import DistributedType

    from gasp.errors import ConfigError

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    world = accelerator.num_processes
    wanted = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * world,
    }
    for key, value in wanted.items():
        have = ds.get(key, "auto")
        if have not in ("auto", None) and float(have) != float(value):
            raise ConfigError(
                f"DeepSpeed config {key}={have} disagrees with the train config ({value}); set it to auto "
                "or to the same value"
            )
        ds[key] = value


@contextlib.contextmanager
def no_zero3_init(accelerator) -> Iterator[None]:
    """A context where transformers builds and loads models whole, even under DeepSpeed ZeRO-3 (the
    engine partitions them at ``prepare``). accelerate registers its ZeRO-3 config with transformers
    whatever ``zero3_init_flag`` says, and a random-weight preset built and saved under that
    partitioned init holds empty tensors."""
    if getattr(accelerator.state, "deepspeed_plugin", None) is None:
        yield
        return
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
