"""The options the commands share, each written once.

* Types that check a value when it is parsed: paths that are not empty (an unset shell variable
  is not "the current folder"), finite numbers in range ('nan' and 'inf' are not numbers here),
  device names of a known form. Whether a device exists on this machine is checked by the
  library first thing, before any output exists (``mf2.devices.resolve_device``).
* The training, model and DFN options, made from the config dataclasses' own fields and
  defaults (``TrainConfig``, ``MF2Config`` presets, ``DFNConfig``): a field gets its flag here,
  once, and every command that trains offers it. ``explicit`` tells which of them the user
  typed, so that a resumed run can refuse the ones that contradict what it recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import click
from click.core import ParameterSource


# -- types ---------------------------------------------------------------------------------------
class PathType(click.Path):
    """``click.Path`` that refuses an empty or blank value (``"$UNSET"`` would otherwise mean the
    current folder, recursively)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path (an unset shell variable?)", param, ctx)
        return super().convert(value, param, ctx)


class Text(click.ParamType):
    """A non-empty string (an input path or a glob)."""

    name = "text"

    def convert(self, value, param, ctx):
        if not isinstance(value, str) or not value.strip():
            self.fail("an empty input (an unset shell variable?)", param, ctx)
        return value


class Number(click.ParamType):
    """A finite int or float in [min, max] (open ends with ``min_open``/``max_open``); with
    ``auto``, the word 'auto' too (-> None: the library decides, and records what it chose)."""

    def __init__(self, kind=float, min=None, max=None, min_open=False, max_open=False, auto=False):
        self.kind, self.min, self.max, self.min_open, self.max_open, self.auto = kind, min, max, min_open, max_open, auto
        self.name = ("auto|" if auto else "") + kind.__name__

    def convert(self, value, param, ctx):
        from mf2._checks import expected, number

        if self.auto and (value is None or value == "auto"):
            return None
        what = expected(self.kind is int, self.min, self.max, self.min_open, self.max_open,
                        words=("auto",) if self.auto else ())
        parsed = value
        if isinstance(value, str):  # the command line's text; the library takes numbers only
            try:
                parsed = int(value, 10) if self.kind is int else float(value)
            except ValueError:
                self.fail(f"expected {what}, got {value!r}", param, ctx)
        try:  # the library's own check (mf2._checks): the same rule and words from Python and the CLI
            return self.kind(number(param.name if param is not None else "value", parsed, integer=self.kind is int,
                                    low=self.min, high=self.max, low_open=self.min_open, high_open=self.max_open))
        except ValueError as exc:  # its words after 'expected' (a NaN's says 'finite'), the text as typed
            said = str(exc).split(": expected ", 1)[-1].rsplit(", got ", 1)[0]
            self.fail(f"expected {said}, got {value!r}", param, ctx)


class URL(click.ParamType):
    """An http(s) URL with a host."""

    name = "url"

    def convert(self, value, param, ctx):
        from urllib.parse import urlparse

        parsed = urlparse(str(value).strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            self.fail(f"expected an http:// or https:// URL with a host, got {value!r}", param, ctx)
        return str(value).strip()


class DeviceName(click.ParamType):
    """'auto', 'cpu', 'cuda' or 'cuda:N' (that it exists here is checked before any work)."""

    name = "auto|cpu|cuda[:N]"

    def convert(self, value, param, ctx):
        import re

        text = str(value).strip()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
            self.fail(f"expected auto, cpu, cuda or cuda:N, got {value!r}", param, ctx)
        return text


class Blocks(click.ParamType):
    """DFN's ``blocks``: 'all' or a positive integer."""

    name = "all|int"

    def convert(self, value, param, ctx):
        if value == "all" or isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            k = int(str(value), 10)
        except ValueError:
            k = 0
        if k < 1:
            self.fail(f"expected 'all' or a positive integer, got {value!r}", param, ctx)
        return k


def device_option(help_text: str = "auto (the first CUDA GPU, else the CPU), cpu, cuda or cuda:N."):
    """``--device``, the same default for every command: auto."""
    return click.option("--device", type=DeviceName(), default="auto", show_default=True, help=help_text)


# -- options made from config fields ----------------------------------------------------------------
@dataclass
class Flag:
    """One option for a config field: its declarations, click settings and, where the field's
    own default is not what the command line shows (None = 'auto'), the default to show."""

    field: str
    decls: tuple
    settings: dict = field(default_factory=dict)
    default: object = "from-config"


def _train_flags():
    from mf2.devices import PRECISIONS
    from mf2.models.qformer import CHECKPOINTING

    return [
        Flag("epochs", ("--epochs",), dict(type=Number(int, min=1))),
        Flag("batch_size", ("--batch-size",), dict(type=Number(int, min=2), help="Images per step (per process).")),
        Flag("lr", ("--lr",), dict(type=Number(float, min=0, min_open=True, auto=True),
                                   help="Peak learning rate; auto = the preset's: Table VI's 1e-4 for 'paper', 5e-4 "
                                        "(pretraining) and 1e-3 (DFN) for 'small'."), "auto"),
        Flag("weight_decay", ("--weight-decay",), dict(type=Number(float, min=0), help="AdamW's, on weight matrices.")),
        Flag("warmup_steps", ("--warmup-steps",), dict(
            type=Number(int, min=1, auto=True),
            help="Linear warm-up steps; auto = Table VI's 2,000 when the run is as long as the paper's (16,770 steps), "
                 "else the same share of the run (about 12%)."), "auto"),
        Flag("tasks", ("--tasks",), dict(type=click.Choice(["both", "au", "emotion"]),
                                         help="Which classification losses train.")),
        Flag("seed", ("--seed",), dict(type=Number(int))),
        Flag("au_weighting", ("--au-weighting",), dict(
            type=click.Choice(["frequency", "f1", "frequency-f1", "none"]),
            help="The AU loss's positive weight: each AU's training negatives/positives ratio (1 to 20; 0.5 then "
                 "marks a balanced decision), 2/--au-f1-target - 1 for every AU (0.5 then marks the F1-optimal "
                 "probability), the larger of the two, or plain BCE.")),
        Flag("au_f1_target", ("--au-f1-target",), dict(
            type=Number(float, min=0, max=1, min_open=True),
            help="The AU F1 that --au-weighting f1 and frequency-f1 expect (0.5: positives weigh 3; at most 20, "
                 "as the frequency weights).")),
        Flag("train_rows", ("--train-rows",), dict(
            type=Number(int, min=1),
            help="Train on this many training rows, drawn with --seed (learning curves) [default: all].",
            show_default=False)),
        Flag("flip", ("--flip/--no-flip",), dict(
            help="Draw each face's mirrored view half the time when the cache holds them (extract-features "
                 "--augment flip).")),
        Flag("emotion_smoothing", ("--emotion-smoothing",), dict(
            type=Number(float, min=0, max=1, max_open=True), help="Label smoothing of the emotion cross-entropy.")),
        Flag("head_dropout", ("--head-dropout",), dict(
            type=Number(float, min=0, max=1, max_open=True),
            help="Dropout of the task heads' inputs (the pooled query outputs) in training.")),
        Flag("head_mixup", ("--head-mixup",), dict(
            type=Number(float, min=0, max=1, max_open=True),
            help="Feature mixup: each face's head inputs and labels mixed with another face's of the batch, its share "
                 "drawn in [0, this].")),
        Flag("average_epochs", ("--average-epochs",), dict(
            type=Number(float, min=0),
            help="Validate, pick the best epoch from and save the trained weights' moving average over about this "
                 "many epochs (0: the weights as trained).")),
        Flag("deterministic", ("--deterministic/--nondeterministic",), dict(
            help="Deterministic algorithms: the same seed on the same machine gives the same run, bit for bit. "
                 "Default: on for CPUs (about 4% slower), off for GPUs (where it costs more; see README).",
            show_default=False)),
        Flag("precision", ("--precision",), dict(
            type=click.Choice(list(PRECISIONS)),
            help="bf16: autocast (float32 master weights and optimizer state); auto = bf16 on GPUs that support it, "
                 "fp32 on CPUs.")),
        Flag("activation_checkpointing", ("--activation-checkpointing",), dict(
            type=click.Choice(["auto", *CHECKPOINTING]),
            help="Recompute Q-Former blocks in the backward to save memory: the ITM passes (most of it) or every "
                 "pass. Same losses and gradients; more compute. auto = itm for the paper preset on a GPU, else none.")),
        Flag("compile", ("--compile/--no-compile",), dict(
            help="torch.compile each Q-Former block: fused element-wise kernels (faster on GPUs; about a minute to "
                 "compile at the start).")),
        Flag("device", ("--device",), dict(type=DeviceName(), help="auto (the first CUDA GPU, else the CPU), cpu, "
                                                                   "cuda or cuda:N.")),
    ]


def _model_flags():
    from mf2.models.config import EMOTION_READS, PRESETS

    return [
        Flag("preset", ("--preset",), dict(type=click.Choice(list(PRESETS))), "small"),
        Flag("emo_vl", ("--emo-vl/--no-emo-vl",), dict(help="Ablation --no-emo-vl: without the Emo-VL branch.")),
        Flag("au_vl", ("--au-vl/--no-au-vl",), dict(help="Ablation --no-au-vl: without the AU-VL branch.")),
        Flag("emotion_reads", ("--emotion-reads",), dict(
            type=click.Choice(list(EMOTION_READS)),
            help="The emotion head's input: Emo-VL's pooled queries, or those beside each AU sequence's.")),
    ]


def _dfn_flags():
    return [
        Flag("blocks", ("--adapter-blocks",), dict(type=Blocks(), help="MF² blocks the pathways read: 'all' (4N "
                                                                       "cells) or k evenly spaced (Table VI's 7).")),
        Flag("bottleneck", ("--bottleneck",), dict(type=Number(int, min=0), help="Cell width r (0 = hidden).")),
        Flag("lam", ("--gate-scale",), dict(type=Number(float), help="λ, the gate scaling factor.")),
        Flag("align_weight", ("--align-weight",), dict(
            type=Number(float, min=0), help="Weight of the vision/text pathway alignment loss (0: task losses only).")),
    ]


def _config_defaults(section: str) -> dict:
    from mf2.features.extract import ExtractSettings
    from mf2.models.config import DFNConfig, MF2Config
    from mf2.training.loop import TrainConfig

    cls = {"train": TrainConfig, "model": MF2Config, "dfn": DFNConfig, "extract": ExtractSettings}[section]
    instance = cls()
    out = {f.name: getattr(instance, f.name) for f in fields(cls)}
    if section == "extract":  # the settings' tuple of augmentations, as the option's word
        from mf2.features.extract import augment_word

        out["augment"] = augment_word(out["augment"])
    return out


def _extract_flags():
    from pathlib import Path

    from mf2.devices import PRECISIONS
    from mf2.features.extract import AUGMENT_CHOICES

    return [
        Flag("vision", ("--vision",), dict(
            help="timm model name; auto = vit_base_patch16_224 when its weights are on disk, else efficientnet_lite0.")),
        Flag("vision_weights", ("--vision-weights",), dict(
            type=PathType(path_type=Path), help="Weights file for --vision (.safetensors/.pth).", show_default=False)),
        Flag("text", ("--text",), dict(
            help="transformers name or folder; auto = bert-base-uncased when cached, else the packaged MiniLM.")),
        Flag("face", ("--face",), dict(
            type=click.Choice(["aligned", "detect"]),
            help="aligned: inputs are face crops; detect: dlib finds the largest face and aligns it.")),
        Flag("landmarks", ("--landmarks",), dict(
            type=click.Choice(["auto", "dlib", "manifest", "canonical"]),
            help="auto: the manifest's when every row has them, else dlib.")),
        Flag("image_size", ("--image-size",), dict(type=Number(int, min=32, max=4096))),
        Flag("batch_size", ("--batch-size",), dict(type=Number(int, min=1))),
        Flag("device", ("--device",), dict(type=DeviceName(), help="auto (the first CUDA GPU, else the CPU), cpu, "
                                                                   "cuda or cuda:N.")),
        Flag("au_samples", ("--au-samples",), dict(type=Number(int, min=1, max=32),
                                                   help="R: R x R samples per AU centre.")),
        Flag("au_window", ("--au-window",), dict(type=Number(float, min=0, min_open=True, max=10),
                                                 help="Sampling grid side, in rulers (inner-eye-corner distance).")),
        Flag("au_map", ("--au-map",), dict(
            type=click.Choice(["auto", "last", "stride16", "stride8"]),
            help="The feature map AU regions are pooled from: auto = the stride-16 stage of a CNN (finer than its last "
                 "map; 14 x 14 at 224 px), the patch grid of a ViT.")),
        Flag("augment", ("--augment",), dict(
            type=click.Choice(list(AUGMENT_CHOICES)),
            help="flip: also store each face's mirrored view (landmarks mirrored, each AU's two centres swapped); "
                 "training samples from both, evaluation reads the originals (evaluate --tta flip averages them in). "
                 "auto: flip when the training split has at most 5,000 faces (not yet shown to win: see README).")),
        Flag("au_regions", ("--au-regions",), dict(
            type=click.Choice(["table", "small-face"]),
            help="Each AU's centres and window: table = DATA.md's centres, one window for all; small-face = per-AU "
                 "centres and sizes for the small muscles (README).")),
        Flag("precision", ("--precision",), dict(
            type=click.Choice(list(PRECISIONS)),
            help="bf16: autocast the frozen backbones (faster on GPUs and on CPUs with AVX512-BF16); auto = bf16 on "
                 "GPUs that support it, fp32 on CPUs.")),
        Flag("workers", ("--workers",), dict(
            type=Number(int, min=0, auto=True),
            help="Processes that decode images and find faces ahead of the backbones; auto = none on a CPU, up to 8 "
                 "of this process's cores on a GPU."), "auto"),
        Flag("allow_download", ("--allow-download",), dict(
            is_flag=True, help="Let timm/transformers download weights that are not on disk.", show_default=False)),
    ]


FLAGS = {"train": _train_flags, "model": _model_flags, "dfn": _dfn_flags, "extract": _extract_flags}


def config_options(section: str, skip=()):
    """Click options for every flag of a config section ('train', 'model', 'dfn'), with the
    config's own defaults; each lands in the command's keyword arguments under its field name."""
    defaults = _config_defaults(section)

    def decorate(fn):
        for flag in reversed(FLAGS[section]()):
            if flag.field in skip:
                continue
            default = defaults[flag.field] if flag.default == "from-config" else flag.default
            settings = {"show_default": True, **flag.settings}
            fn = click.option(*flag.decls, flag.field, default=default, **settings)(fn)
        return fn

    return decorate


def section(kwargs: dict, name: str) -> dict:
    """The keyword arguments of a command that belong to config section ``name``, removed from it."""
    names = {f.field for f in FLAGS[name]()}
    return {k: kwargs.pop(k) for k in list(kwargs) if k in names}


def explicit(*names: str, **extra: str) -> dict:
    """Section -> {field: value} of the options the user typed (their defaults do not count), for
    the given config sections, and for ``extra`` command options (field -> section): what a
    resumed run compares with its recorded settings."""
    ctx = click.get_current_context()
    typed = {k for k in ctx.params if ctx.get_parameter_source(k) != ParameterSource.DEFAULT}
    out = {n: {f.field: ctx.params[f.field] for f in FLAGS[n]() if f.field in typed} for n in names}
    for name, where in extra.items():
        if name in typed:
            out.setdefault(where, {})[name] = ctx.params[name]
    return out


def typed_value(name: str):
    """The value of option ``name`` if the user typed it, else None (its default does not count)."""
    ctx = click.get_current_context()
    return ctx.params[name] if ctx.get_parameter_source(name) != ParameterSource.DEFAULT else None
