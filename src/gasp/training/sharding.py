"""Engines for ``gasp train``: FSDP2 and DeepSpeed through accelerate.

FSDP2 (``accelerate launch --config_file configs/accelerate/fsdp.yaml``, ``fsdp_version: 2``) is
accelerate's own: ``accelerator.prepare`` runs its ``fsdp2_prepare_model``, one FSDP unit per class
named by ``GaspObjective._no_split_modules`` (the model's decoder and vision layers, and each
correspondence head), then the root; trained parameters upcast to fp32.

Precision policy: accelerate's default for ``mixed_precision: bf16`` is ``MixedPrecisionPolicy``
with bf16 parameters, gradient reduction and outputs. gasp passes its own plugin
(:func:`fsdp_plugin`): bf16 parameters for compute, but gradients reduced in fp32 (a bf16 sum over
32 processes loses about 5 bits) and outputs left as computed (the objective's outputs are the loss
and its logs, computed in fp32; a bf16 output rounds a loss of 7.3 to steps of 0.03).

On CPU processes accelerate 1.15 never selects FSDP: its state switches to FSDP for accelerator
devices only, so an FSDP config launched with ``ACCELERATE_USE_CPU=1`` silently runs DDP (and FSDP1's
``sync_module_states`` stops with "no available devices"). gasp then switches accelerate's state to
FSDP itself (:func:`use_fsdp_on_cpu`); ``fully_shard`` works on a gloo CPU mesh, so ``prepare``,
clipping and the state dicts run the same accelerate code as on GPUs. That is how the CPU tests
cover accelerate's FSDP2 path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger("gasp.train")


def fsdp_launched() -> bool:
    """Whether ``accelerate launch`` was given an FSDP config (it exports ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def deepspeed_launched() -> bool:
    """Whether `accelerate launch` was given a DeepSpeed config (it exports ACCELERATE_USE_DEEPSPEED)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def fsdp_plugin(mixed: str):
    """accelerate's FSDP plugin for a launched FSDP config (its other settings come from the
    launcher's environment) with gasp's precision policy; None when no FSDP config was launched."""
    if not fsdp_launched():
        return None
    from accelerate.utils import FullyShardedDataParallelPlugin

    from gasp.errors import ConfigError

    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(
            "gasp trains with FSDP2 only (FSDP1 cannot flatten a bf16 base with fp32 LoRA and heads): set "
            "fsdp_version: 2 in the accelerate config, as configs/accelerate/fsdp.yaml does"
        )

    return FullyShardedDataParallelPlugin(mixed_precision_policy=mixed_precision_policy(mixed))


def mixed_precision_policy(mixed: str):
    """FSDP2 ``MixedPrecisionPolicy``: low-precision parameters for compute, fp32 gradient reduction,
    outputs as computed (``mixed`` ``no``: every field None, i.e. each parameter's own dtype).

    ``output_dtype`` applies to every unit, not only the root: an fp32 output of a vision block would
    meet the bf16 frozen weights of the next module outside any unit (there is no autocast under
    FSDP2). The objective computes its losses in fp32 itself."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed)
    if low is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)


def process_group_handlers() -> list:
    """accelerate kwargs handlers for the process group: gloo for DeepSpeed on CPU processes.

    accelerate 1.15 picks a process-group backend for accelerator devices only. Launched with a
    DeepSpeed config on a machine without one, it lets DeepSpeed initialise the group but then
    counts one process of rank 0 in every process (all of them would write as the main process).
    Naming the backend (gloo) makes it read the real rank and world size from the group.
    """
    from accelerate.utils import InitProcessGroupKwargs

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if deepspeed_launched() and several and not torch.cuda.is_available():
        return [InitProcessGroupKwargs(backend="gloo")]
    return []


def check_deepspeed_ran(accelerator) -> None:
    """Refuse a DeepSpeed config that accelerate did not honour (with ``ACCELERATE_USE_CPU=1`` it runs
    DDP instead, silently).

    Raises:
        ConfigError: DeepSpeed was launched and accelerate runs another engine.
    """
    from accelerate.utils import DistributedType

    from gasp.errors import ConfigError

    if deepspeed_launched() and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(
            f"a DeepSpeed config was launched but accelerate runs {accelerator.distributed_type}; on CPU "
            "processes launch it without ACCELERATE_USE_CPU=1 (with it accelerate falls back to DDP)"
        )


def use_fsdp_on_cpu(accelerator, plugin) -> None:
    """When an FSDP config was launched on CPU processes and accelerate fell back to DDP, switch its
    state to FSDP with ``plugin`` (see the module docstring)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    if plugin is None or accelerator.distributed_type == DistributedType.FSDP:
        return
    if accelerator.device.type != "cpu" or accelerator.num_processes < 2:
        return
    if accelerator.mixed_precision != "no":  # as AcceleratorState does for FSDP on accelerators
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    # Both shared states: AcceleratorState copies PartialState's fields whenever it is instantiated.
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    if accelerator.is_main_process:
        log.warning(
            "FSDP config on CPU processes: accelerate 1.15 selects FSDP for accelerator devices only; gasp "
            "switched its state to FSDP2 (gloo)"
        )


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
