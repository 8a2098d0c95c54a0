"""MF² pretraining on a feature cache (``mf2 pretrain``), and full fine-tuning of a pretrained
MF² on the task losses (``mf2 finetune --full``: ``init_from`` and ``align=False``).

What is this trainer's own (the session, ``mf2.training.session``, does the rest): the model
(an ``MF2`` sized for the cache's features and ITG sub-vocabulary, or a pretrained one's copy),
the batches (``CacheReader``: windows of the cache, shuffled per epoch, each rank its rows), the
losses (ITC/ITM/ITG of both branches + the classifiers, or the classifiers alone), validation on
the images of the val split, and the ITM negatives' generator. MF² pretraining needs captions:
a cache without the text its branches align with is refused unless ``align=False``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mf2.evaluation.cache_predictions import validation_metrics
from mf2.features.reader import CacheReader, prefetch
from mf2.models.config import PAPER_PARAMS, MF2Config
from mf2.models.mf2 import MF2, count_parameters
from mf2.runs import IMAGE_FIELDS, TEXT_FIELDS, RunError, RunFolder, check_features, load_model, model_config
from mf2.training.loop import TrainConfig, head_regularisation, rng_state
from mf2.training.session import Trainer, contradictions, train


def build_model(model_cfg: MF2Config, reader: CacheReader) -> MF2:
    """An MF² for the cache ``reader`` reads: its feature widths and ITG sub-vocabulary."""
    model_cfg.vision_dim = reader.vision_dim
    model_cfg.au_vision_dim = reader.au_vision_dim
    model_cfg.text_dim = reader.text_dim
    if not model_cfg.vocab:
        model_cfg.vocab = reader.vocabulary()
    return MF2(model_cfg)


def require_text(reader: CacheReader, cfg: MF2Config, cache, log=print) -> None:
    """The text the alignment losses read is in the cache: Emo-VL's captions and AU-VL's per-AU
    sentences (for the branches the model has). None of it is a one-line RunError that says how
    to get it; training rows without it are counted and said (they train the classifiers only)."""
    missing = []
    if cfg.emo_vl and not reader.has_emo_text:
        missing.append(f"{cfg.emo_text} captions (which Emo-VL aligns with)")
    if cfg.au_vl and not reader.has_au_text:
        missing.append("per-AU sentences (which AU-VL aligns with)")
    if missing:
        raise RunError(f"{cache} holds no {' and no '.join(missing)}: MF² pretraining aligns faces with their "
                       "captions (ITC/ITM/ITG). Caption the manifest first (mf2 caption --manifest M) and extract the "
                       "cache from the .captioned.jsonl it writes; or pass --no-align to train the classifiers only")
    coverage = reader.text_coverage()
    for name, have in coverage.items():
        if have < len(reader):
            log(f"warning: {len(reader) - have} of {len(reader)} training rows have no {name}: they train the "
                "classifiers only")


class MF2Trainer(Trainer):
    """MF² on a cache: pretraining (``align``), or full fine-tuning from ``init_from``'s weights."""

    kind, method = "mf2", "pretrain"

    def __init__(self, cache, model_cfg: MF2Config | None, init_from=None, align: bool = True):
        self.cache, self.model_cfg, self.init_from, self.align = cache, model_cfg, init_from, align
        self.base = None

    def inputs(self) -> dict:
        return {"--cache": self.cache, "--from": self.init_from}

    def restore(self, run: RunFolder, saved: dict, given: dict) -> None:
        contradictions(run, "model", saved["model"], given.get("model", {}))
        contradictions(run, "run", {"align": saved.get("align", True)}, given.get("run", {}))
        recorded = saved.get("init_from")
        if self.init_from is not None and recorded and Path(self.init_from).resolve() != Path(recorded).resolve():
            raise RunError(f"--resume {run}: --from {self.init_from} is not the run it was fine-tuned from ({recorded}); "
                           "drop --from's new value, or start a new run")
        self.model_cfg = model_config(saved, run.path / "config.json")
        self.align = saved.get("align", True)
        self.saved_features = saved.get("features")

    @property
    def preset(self) -> str:
        return self.model_cfg.preset

    def open(self, cfg: TrainConfig, run: RunFolder, saved: dict | None, rank: int, log):
        if self.init_from is not None and saved is None:
            with torch.random.fork_rng():  # its weights replace the initialisation: loading moves no generator
                self.base = load_model(self.init_from, kinds=("mf2",))[0]
            self.model_cfg = self.base.cfg
        self.train_reader = CacheReader(self.cache, "train", self.model_cfg.emo_text, cfg.window, flip=cfg.flip,
                                        limit=cfg.train_rows, seed=cfg.seed)
        signature = self.signature = self.train_reader.store.signature
        if saved is not None:  # the same features as before: the whole signature, manifest included
            check_features(saved.get("features", signature), signature, f"--resume {run} on {self.cache}",
                           IMAGE_FIELDS + TEXT_FIELDS + ("manifest",))
        elif self.init_from is not None:
            check_features(RunFolder(self.init_from).features(), signature, f"{self.cache} for {self.init_from}",
                           IMAGE_FIELDS + TEXT_FIELDS)
        if self.align:
            require_text(self.train_reader, self.model_cfg, self.cache, log)
        self.val = CacheReader(self.cache, "val", self.model_cfg.emo_text, cfg.window)
        self.rank = rank
        return self.train_reader.aus()

    def build(self, cfg: TrainConfig, device: torch.device) -> MF2:
        model = build_model(self.model_cfg, self.train_reader).to(device)
        model.set_activation_checkpointing(cfg.activation_checkpointing)
        if cfg.compile:
            model.compile_blocks()
        if self.base is not None:
            model.load_state_dict(self.base.state_dict())
            self.base = None
        self.model, self.device = model, device
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + self.rank)
        return model

    def record(self, cfg: TrainConfig, model: MF2) -> tuple[dict, dict]:
        from mf2 import distributed

        return ({"model": self.model_cfg.to_dict(), "cache": str(self.cache), "features": self.signature,
                 "world_size": distributed.world_size(), "align": self.align,
                 "init_from": str(self.init_from) if self.init_from else None},
                {"ours": count_parameters(model), "paper": PAPER_PARAMS})

    def batches(self, epoch: int, cfg: TrainConfig, rank: int, world: int):
        return prefetch(self.train_reader.batches(cfg.batch_size, epoch, cfg.seed, rank=rank, world=world), self.device)

    def losses_of(self, net, cfg: TrainConfig, weight: torch.Tensor):
        regularisation = head_regularisation(cfg)  # the heads' small-data regularisers (None: all off)
        return lambda b: net(b, cfg.tasks, self.generator, self.align, weight, regularisation)

    def validate(self, cfg: TrainConfig) -> dict:
        return validation_metrics(self.model, self.val, self.device, cfg.precision)

    def rng_state(self) -> dict:
        return rng_state(self.generator)

    def restore_rng(self):
        return self.generator


def pretrain(cache, out, model_cfg: MF2Config | None, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
             progress=None, log=print, max_epochs_this_run: int | None = None, init_from=None, align: bool = True,
             extend_to: int | None = None, given: dict | None = None) -> dict:
    """Train MF² on ``cache`` into the run folder ``out``; returns the last epoch's log row.

    ``init_from`` (a run folder) starts from that run's weights; ``align=False`` trains the task
    losses only -- together they are full fine-tuning (``mf2 finetune --full``). ``extend_to``
    (with ``resume``) trains a run further, to that many epochs. ``given``: the options the user
    typed, by section (refused on ``resume`` where they contradict the run's record)."""
    return train(MF2Trainer(cache, model_cfg, init_from, align), out, cfg, resume=resume, overwrite=overwrite,
                 given=given, extend_to=extend_to, max_epochs_this_run=max_epochs_this_run, progress=progress, log=log)
