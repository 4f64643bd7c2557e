"""open_clip back-end (``embed.name: open_clip``).

Weights, in order of preference:

1. ``embed.checkpoint``: a local checkpoint file (``.pt``/``.bin``/``.safetensors``, a state dict
   of the ``embed.model`` architecture). Loaded with ``torch.load(weights_only=True)`` by
   open_clip. When ``embed.pretrained`` also names a known tag, that tag's preprocessing
   (mean/std, QuickGELU) is used with the file.
2. ``embed.pretrained``: an open_clip tag (e.g. ``laion2b_s34b_b88k`` for ViT-B-16), downloaded
   into the Hugging Face cache on first use (needs internet once; offline afterwards).
3. Neither: an error, unless ``embed.allow_random_weights`` is set (timing runs only).

``semantic`` is True for a tag, and for a checkpoint file unless the file is evidently untrained:
CLIP-style training moves the learned temperature ``logit_scale`` far from its initial value
(log(1/0.07) = 2.659, or the architecture's ``init_logit_scale``), so a file whose
``logit_scale`` still equals the initial value holds random weights and is not semantic.

Preprocessing is done here, batched: each crop is resized with OpenCV to the model's input size
(``embed.resize_mode``: ``pad`` letterboxes with black, keeping the whole crop and its aspect
ratio; ``squash`` stretches; ``center_crop`` is CLIP's own resize-shortest-side-then-crop), the
crops are stacked into one uint8 array, moved to the device once and normalised there with the
model's mean/std. On CUDA the model runs in fp16 (``embed.half_precision``).
"""
from __future__ import annotations

import inspect
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ...config import EmbedConfig
from ..device import resolve_device as _resolve_device
from .base import BaseEncoder, EncoderError, register_encoder

log = logging.getLogger(__name__)

_RESIZE_MODES = ("pad", "squash", "center_crop")


def resolve_device(device: str):
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    return _resolve_device(device, "embed.device", EncoderError)


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def resize_crop(crop: np.ndarray, out_hw: tuple[int, int], mode: str = "pad") -> np.ndarray:
    """Resize one HxWx3 uint8 crop to ``out_hw`` (see module doc for the modes)."""
    oh, ow = out_hw
    h, w = crop.shape[:2]
    if mode == "squash":
        scale = min(ow / w, oh / h)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return cv2.resize(crop, (ow, oh), interpolation=interp)
    if mode == "pad":
        scale = min(ow / w, oh / h)
        nw, nh = max(1, min(ow, round(w * scale))), max(1, min(oh, round(h * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(crop, (nw, nh), interpolation=interp)
        out = np.zeros((oh, ow, 3), np.uint8)
        y0, x0 = (oh - nh) // 2, (ow - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = resized
        return out
    if mode == "center_crop":
        scale = max(ow / w, oh / h)
        nw, nh = max(ow, round(w * scale)), max(oh, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(crop, (nw, nh), interpolation=interp)
        y0, x0 = (nh - oh) // 2, (nw - ow) // 2
        return np.ascontiguousarray(resized[y0 : y0 + oh, x0 : x0 + ow])
    raise EncoderError(f"embed.resize_mode must be one of {_RESIZE_MODES}, got {mode!r}")


def _weights_hint(cfg: EmbedConfig) -> str:
    return (
        f"Set embed.checkpoint to a local open_clip checkpoint file for model {cfg.model!r}, or "
        f"embed.pretrained to an open_clip tag (downloads once, needs internet)."
    )


class OpenClipEncoder(BaseEncoder):
    name = "open_clip"

    def __init__(self, cfg: EmbedConfig):
        super().__init__(cfg.batch_size, cfg.text_cache_size)
        try:
            import open_clip
            import torch
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise EncoderError(
                f"embed.name=open_clip needs the open_clip_torch package ({e}); "
                "install it with: pip install open_clip_torch"
            ) from e
        if cfg.resize_mode not in _RESIZE_MODES:
            raise EncoderError(f"embed.resize_mode must be one of {_RESIZE_MODES}, got {cfg.resize_mode!r}")
        self._torch = torch
        self.cfg = cfg
        self.resize_mode = cfg.resize_mode
        self.device = resolve_device(cfg.device)
        half = self.device.type == "cuda" and cfg.half_precision
        model_name = cfg.model.strip()
        builtin = model_name.replace("/", "-") in open_clip.list_models()
        if not builtin and not model_name.startswith(("hf-hub:", "local-dir:")):
            raise EncoderError(
                f"embed.model={model_name!r} is not an open_clip architecture; "
                f"examples: ViT-B-16, ViT-B-32, ViT-L-14, RN50 (open_clip.list_models() has all)"
            )

        pretrained, kwargs, from_tag = self._resolve_weights(open_clip, cfg, model_name)
        if "weights_only" in inspect.signature(open_clip.create_model_and_transforms).parameters:
            kwargs["weights_only"] = True  # older open_clip: torch.load's own default applies
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                model_name,
                pretrained=pretrained,
                precision="fp16" if half else "fp32",
                device=self.device,
                **kwargs,
            )
        except FileNotFoundError as e:
            raise EncoderError(f"open_clip weights not found: {e}. {_weights_hint(cfg)}") from e
        except RuntimeError as e:
            msg = str(e)
            if "state_dict" in msg or "size mismatch" in msg:
                raise EncoderError(
                    f"checkpoint {pretrained!r} does not fit architecture embed.model={model_name!r}: "
                    f"{msg.splitlines()[0]}. Set embed.model to the checkpoint's architecture."
                ) from e
            raise EncoderError(
                f"could not load open_clip weights for embed.model={model_name!r} "
                f"(embed.pretrained={cfg.pretrained!r}, embed.checkpoint={cfg.checkpoint!r}): {msg.rstrip('.')}. "
                "Without internet access, download the checkpoint on another machine and set "
                "embed.checkpoint to its local path."
            ) from e
        model.eval()
        self.model = model
        self.dtype = next(model.parameters()).dtype
        try:
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as e:  # HF tokenizers may need a download
            raise EncoderError(f"could not build the tokenizer of {model_name!r}: {e}") from e

        pp = open_clip.get_model_preprocess_cfg(model)
        self.input_hw = _size_hw(pp.get("size", 224))
        mean = np.asarray(pp.get("mean", open_clip.OPENAI_DATASET_MEAN), np.float32) * 255.0
        std = np.asarray(pp.get("std", open_clip.OPENAI_DATASET_STD), np.float32) * 255.0
        self._mean = torch.as_tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.as_tensor(std, device=self.device).view(1, 3, 1, 1)

        cfg_dim = (open_clip.get_model_config(model_name.replace("/", "-")) or {}).get("embed_dim") if builtin else None
        self.dim = int(cfg_dim) if cfg_dim else int(self._encode_text_batch([""]).shape[1])
        if pretrained is None:
            self.semantic = False
            self.weights = "random (embed.allow_random_weights)"
        elif from_tag:
            self.semantic = True
            self.weights = f"open_clip tag {pretrained}"
        else:
            self.semantic = not _looks_untrained(model, model_name if builtin else None)
            self.weights = f"checkpoint {pretrained}"
        if not self.semantic:
            log.warning("open_clip %s with %s: embeddings are not semantic (untrained weights)", model_name, self.weights)
        self.image_calls = 0
        self.text_calls = 0

    @staticmethod
    def _resolve_weights(open_clip, cfg: EmbedConfig, model_name: str):
        """-> (pretrained argument, extra create_model kwargs, whether it is an official tag)."""
        ckpt = cfg.checkpoint.strip()
        tag = cfg.pretrained.strip()
        arch = model_name.replace("/", "-")
        kwargs: dict = {}
        if ckpt:
            path = Path(os.path.expanduser(ckpt))
            if not path.is_file():
                raise EncoderError(f"embed.checkpoint: no such file {str(path)!r}. {_weights_hint(cfg)}")
            tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
            if tag_cfg:  # the file holds that tag's weights: use its preprocessing
                if "mean" in tag_cfg:
                    kwargs["image_mean"] = tuple(tag_cfg["mean"])
                if "std" in tag_cfg:
                    kwargs["image_std"] = tuple(tag_cfg["std"])
                if tag_cfg.get("quick_gelu"):
                    kwargs["force_quick_gelu"] = True
            return str(path), kwargs, False
        if tag:
            if os.path.isfile(os.path.expanduser(tag)):
                return os.path.expanduser(tag), kwargs, False
            if model_name.startswith(("hf-hub:", "local-dir:")):
                return tag, kwargs, True
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if not open_clip.is_pretrained_cfg(arch, tag):
                raise EncoderError(
                    f"embed.pretrained={tag!r} is neither an open_clip tag for {model_name!r} "
                    f"(known: {tags}) nor an existing file. {_weights_hint(cfg)}"
                )
            return tag, kwargs, True
        if model_name.startswith(("hf-hub:", "local-dir:")):
            return None, kwargs, True  # weights come with the hub/dir model
        if not cfg.allow_random_weights:
            raise EncoderError(
                f"no weights given for open_clip model {model_name!r}. {_weights_hint(cfg)} "
                "(embed.allow_random_weights: true runs untrained weights for timing only.)"
            )
        return None, kwargs, False

    # -- batch calls
    def preprocess(self, crops: Sequence[np.ndarray]):
        """Crops -> one normalised (N, 3, H, W) tensor on the model's device and dtype."""
        torch = self._torch
        oh, ow = self.input_hw
        batch = np.empty((len(crops), oh, ow, 3), np.uint8)
        for i, c in enumerate(crops):
            if c.shape[0] == oh and c.shape[1] == ow:
                batch[i] = c
            else:
                batch[i] = resize_crop(c, (oh, ow), self.resize_mode)
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        return x.to(self.dtype).contiguous()

    def _encode_image_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        torch = self._torch
        self.image_calls += 1
        with torch.inference_mode():
            feats = self.model.encode_image(self.preprocess(crops))
        return feats.float().cpu().numpy()

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        self.text_calls += 1
        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            feats = self.model.encode_text(tokens)
        return feats.float().cpu().numpy()


def _looks_untrained(model, arch: str | None) -> bool:
    """True when the learned temperature still holds its initial value (random weights)."""
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        return False
    value = float(scale.detach().float().reshape(-1)[0])
    inits = {math.log(1 / 0.07), math.log(10.0)}
    if arch:
        import open_clip

        cfg_init = (open_clip.get_model_config(arch) or {}).get("init_logit_scale")
        if cfg_init is not None:
            inits.add(float(cfg_init))
    return any(abs(value - v) < 5e-3 for v in inits)


@register_encoder("open_clip")
def _make_open_clip(cfg: EmbedConfig) -> OpenClipEncoder:
    return OpenClipEncoder(cfg)
