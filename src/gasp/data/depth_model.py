"""Monocular depth models loaded by transformers (``AutoModelForDepthEstimation``), batched.

Any depth-estimation checkpoint transformers loads works: Depth Anything V2 (relative or metric),
Depth Pro, ZoeDepth, DPT/MiDaS, GLPN. What a model's output means (see
:mod:`gasp.data.depth_align`) follows from its config:

- ``depth_anything`` relative (Depth Anything V2 ``-hf``), ``dpt`` (DPT, MiDaS): affine-invariant
  inverse depth; a scale and a shift of 1/depth are fitted per frame ("disparity-affine");
- ``depth_anything`` metric, ``zoedepth``, ``depth_pro``, ``glpn``: metric depth; a scale is fitted
  ("depth-scale": the poses of a reconstruction have an arbitrary unit).

Other model types need ``kind`` (``--depth-kind``). Depth Pro's image processor needs torchvision.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from gasp.data.depth_align import DEPTH_KINDS
from gasp.errors import ConfigError, GaspError

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
_KIND_BY_TYPE = {
    "dpt": "disparity-affine",
    "zoedepth": "depth-scale",
    "depth_pro": "depth-scale",
    "glpn": "depth-scale",
}


def depth_kind(config) -> str:
    """The DEPTH_KINDS entry of a model config (see the module table).

    Raises:
        ConfigError: a model type whose output is not known: pass ``--depth-kind``.
    """
    model_type = getattr(config, "model_type", None)
    if model_type == "depth_anything":
        relative = getattr(config, "depth_estimation_type", "relative") == "relative"
        return "disparity-affine" if relative else "depth-scale"
    if model_type in _KIND_BY_TYPE:
        return _KIND_BY_TYPE[model_type]
    raise ConfigError(
        f"cannot tell what a {model_type!r} depth model predicts; pass --depth-kind (one of {DEPTH_KINDS})"
    )


def pick_device(device: str) -> torch.device:
    """``"auto"``: the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DepthModel:
    """A transformers depth model with its image processor.

    Args:
        name: hub id or local folder (config.json, weights, preprocessor_config.json).
        device: "auto", "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (float16 on CUDA, float32 elsewhere), "float32", "float16" or "bfloat16".
        kind: override of :func:`depth_kind`.

    Raises:
        GaspError: the model or its processor cannot be loaded (the message says why).
    """

    def __init__(self, name: str, device: str = "auto", dtype: str = "auto", kind: str | None = None) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation

        self.name = str(name)
        self.device = pick_device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"--dtype must be auto, float32, float16 or bfloat16, got {dtype!r}")
        self.dtype = getattr(torch, dtype)
        where = "local folder" if Path(self.name).is_dir() else "hub id"
        try:
            config = AutoConfig.from_pretrained(self.name)
            self.processor = AutoImageProcessor.from_pretrained(self.name)
            self.model = AutoModelForDepthEstimation.from_pretrained(self.name, dtype=self.dtype)
        except ImportError as e:
            raise GaspError(f"depth model {self.name}: {e}".strip()) from e
        except (OSError, ValueError, KeyError) as e:
            raise GaspError(
                f"cannot load depth model {self.name!r} ({where}; needs config.json, weights and "
                f"preprocessor_config.json): {e}"
            ) from e
        if kind is not None and kind not in DEPTH_KINDS:
            raise ConfigError(f"--depth-kind must be one of {DEPTH_KINDS}, got {kind!r}")
        self.kind = kind or depth_kind(config)
        self.model.to(self.device).eval()
        self._post = getattr(self.processor, "post_process_depth_estimation", None)

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """Predictions for RGB images ``(H, W, 3)`` uint8, each resized to its image: ``(H, W)`` float32
        on the CPU (inverse depth or depth, see ``kind``)."""
        inputs = self.processor(images=list(images), return_tensors="pt")
        inputs = {
            k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()
        }
        outputs = self.model(**inputs)
        sizes = [tuple(im.shape[:2]) for im in images]
        if self._post is not None:
            kwargs = {"target_sizes": sizes}
            if "source_sizes" in inspect.signature(self._post).parameters:
                kwargs["source_sizes"] = sizes
            results = self._post(outputs, **kwargs)
            return [r["predicted_depth"].float().reshape(s).cpu() for r, s in zip(results, sizes)]
        pred = outputs.predicted_depth.float()
        return [
            torch.nn.functional.interpolate(p[None, None], size=s, mode="bilinear", align_corners=False)[
                0, 0
            ].cpu()
            for p, s in zip(pred, sizes)
        ]
