"""What every trainer shares: training settings, seeding, the learning-rate schedule, optimizer
groups, one epoch of steps, and ``fit``, the epoch loop with validation, logs and checkpoints.

Table VI defaults: 30 epochs, AdamW (weight decay 0.05 on weight matrices), lr 1e-4 after a
linear warm-up of 2000 steps (then cosine decay to 0 -- the decay is BLIP-2's; the paper names
only the warm-up), batch 56.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from mf2 import distributed
from mf2.data.labels import N_EMOTIONS
from mf2.devices import PRECISIONS, autocast, resolve_device, resolve_precision
from mf2.evaluation.metrics import selection_score
from mf2.models.config import check, positive
from mf2.models.mf2 import HeadRegularisation
from mf2.models.qformer import CHECKPOINTING
from mf2.runs import RunError, RunFolder, typed_section
from mf2.training.averaging import WeightAverage
from mf2.training.checkpoint import load_checkpoint, save_checkpoint


# Table VI, at the paper's scale: 2,000 warm-up steps of its 31,320 // 56 x 30 = 16,770 steps.
TABLE_VI = {"epochs": 30, "batch_size": 56, "lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 2000}
WARMUP_FRACTION = TABLE_VI["warmup_steps"] / (31320 // TABLE_VI["batch_size"] * TABLE_VI["epochs"])  # ~12%
# The learning rate a preset trains with unless told: 'paper' is Table VI's for every step;
# 'small' (hidden 128; CPUs and a few thousand faces) the rates its runs learn with (a 1e-4
# run of a few hundred steps barely moves it).
PRESET_LR = {"paper": {"pretrain": 1e-4, "dfn": 1e-4}, "small": {"pretrain": 5e-4, "dfn": 1e-3}}


def resolve_warmup(warmup_steps: int | None, total_steps: int) -> int:
    """Table VI's 2,000 warm-up steps when the run is as long as the paper's (16,770 steps) or
    longer, else the same share of the run (about 12%): a warm-up that never ends, on a data set
    of a few hundred faces, would leave the learning rate near zero the whole run."""
    if warmup_steps is not None:
        return warmup_steps
    return max(1, min(TABLE_VI["warmup_steps"], round(WARMUP_FRACTION * total_steps)))


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 56
    lr: float | None = None  # None = the preset's (PRESET_LR): Table VI's 1e-4 for 'paper'
    weight_decay: float = 0.05
    warmup_steps: int | None = None  # None = resolve_warmup: Table VI's 2,000 at the paper's scale
    seed: int = 0
    # deterministic algorithms: the same seed on the same machine gives the same run, bit for bit.
    # None = True on a CPU (without them, the CPU backward of advanced indexing accumulates in
    # thread order; ~4% slower) and False on a GPU (see ``seed_everything``).
    deterministic: bool | None = None
    tasks: str = "both"  # au | emotion | both (which classification losses train)
    device: str = "auto"  # the first CUDA GPU, else the CPU (resolved, and checked, before a run starts)
    window: int = 512  # rows read together (shuffle unit)
    precision: str = "auto"  # bf16 autocast (fp32 master weights) | fp32; auto = bf16 on GPUs that support it
    # recompute Q-Former blocks in the backward: none | itm (the ITM passes) | all; auto = itm for
    # the paper preset on a GPU (Table VI's batch 56 then fits in 40 GB), none otherwise
    activation_checkpointing: str = "auto"
    compile: bool = False  # torch.compile each Q-Former block (fused element-wise kernels; a minute to compile)
    # the AU loss's positive weight (``au_pos_weight``): 'frequency' = each AU's negatives/positives
    # ratio in the training split (1 to 20); 'f1' = 2 / au_f1_target - 1 for every AU (0.5 of the
    # sigmoid then sits at the F1-optimal probability, whatever the AU's frequency); 'frequency-f1' =
    # the larger of the two per AU; 'none' = plain BCE
    au_weighting: str = "frequency"
    au_f1_target: float = 0.5  # the F1 'f1' and 'frequency-f1' expect the AUs to reach (0.5: weight 3)
    flip: bool = True  # sample each face's mirrored view half the time when the cache holds them (--augment flip)
    train_rows: int | None = None  # train on this many training rows drawn with the seed (learning curves); None = all
    # small-data regularisers of the task heads (``models.mf2.HeadRegularisation``; pretraining and
    # --full fine-tuning): emotion label smoothing, dropout of the heads' inputs, feature mixup
    emotion_smoothing: float = 0.0
    head_dropout: float = 0.0
    head_mixup: float = 0.0
    # validation, the best epoch and the checkpoints' weights are the trained weights' moving
    # average over about this many epochs (``mf2.training.averaging``); 0 = the weights as trained
    average_epochs: float = 0.0

    def __post_init__(self):
        p = "train"
        positive(p, self, "epochs", "batch_size", "window")
        check(p, "lr", self.lr, (int, float, type(None)), lambda v: v > 0, "a positive number or null (auto)")
        check(p, "weight_decay", self.weight_decay, (int, float), lambda v: v >= 0, "a number >= 0")
        check(p, "warmup_steps", self.warmup_steps, (int, type(None)), lambda v: v >= 1, "a positive integer or null")
        check(p, "seed", self.seed, int)
        check(p, "train_rows", self.train_rows, (int, type(None)), lambda v: v >= 1, "a positive integer or null (all)")
        check(p, "deterministic", self.deterministic, (bool, type(None)))
        check(p, "tasks", self.tasks, str, lambda v: v in ("au", "emotion", "both"), "au, emotion or both")
        check(p, "device", self.device, str)
        check(p, "precision", self.precision, str, lambda v: v in PRECISIONS, " or ".join(PRECISIONS))
        check(p, "activation_checkpointing", self.activation_checkpointing, str,
              lambda v: v in ("auto", *CHECKPOINTING), "auto, " + ", ".join(CHECKPOINTING))
        check(p, "au_weighting", self.au_weighting, str, lambda v: v in AU_WEIGHTINGS, ", ".join(AU_WEIGHTINGS))
        check(p, "au_f1_target", self.au_f1_target, (int, float), lambda v: 0 < v <= 1, "a number in (0, 1]")
        for name in ("emotion_smoothing", "head_dropout", "head_mixup"):
            check(p, name, getattr(self, name), (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")
        check(p, "average_epochs", self.average_epochs, (int, float),
              lambda v: math.isfinite(v) and v >= 0, "a number of epochs >= 0 (0 = off)")
        for name in ("compile", "flip"):
            check(p, name, getattr(self, name), bool)

    def resolved(self, preset: str | None = None, total_steps: int | None = None,
                 method: str = "pretrain") -> "TrainConfig":
        """This config with its automatic values decided for its device, the model's preset, the
        run's length in steps and the training ``method`` ('pretrain' or 'dfn'): what a run
        records. Values already decided stay as they are."""
        device = str(resolve_device(self.device))
        gpu = torch.device(device).type == "cuda"
        deterministic = not gpu if self.deterministic is None else self.deterministic
        checkpointing = self.activation_checkpointing
        if checkpointing == "auto":
            checkpointing = "itm" if gpu and preset == "paper" else "none"
        # the learning rate once the preset is known (a call with device settings only leaves it open)
        lr = PRESET_LR.get(preset, PRESET_LR["paper"])[method] if self.lr is None and preset is not None else self.lr
        warmup = resolve_warmup(self.warmup_steps, total_steps) if total_steps is not None else self.warmup_steps
        return replace(self, device=device, deterministic=deterministic, precision=resolve_precision(self.precision, device),
                       activation_checkpointing=checkpointing, lr=lr, warmup_steps=warmup)

    def schedule_line(self, total_steps: int, steps_per_epoch: int) -> str:
        """The resolved schedule in one line (printed at the start of a run), with a warning when
        the learning rate would never leave the warm-up."""
        share = self.warmup_steps / max(total_steps, 1)
        line = (f"schedule: {self.epochs} epochs of {steps_per_epoch} steps (batch {self.batch_size}), lr {self.lr:g}, "
                f"linear warm-up {self.warmup_steps} steps ({share:.0%} of {total_steps}), then cosine decay")
        if self.average_epochs:
            line += f"; validated and saved: the weights' moving average over ~{self.average_epochs:g} epochs"
        if self.warmup_steps >= total_steps:
            line += (f"\nwarning: the warm-up ({self.warmup_steps} steps) is not shorter than the run ({total_steps} "
                     "steps): the learning rate never reaches its value (--warmup-steps auto scales it to the run)")
        return line


def saved_train_config(run: RunFolder, saved: dict, device: str) -> TrainConfig:
    """A run's recorded training settings (``saved``: its migrated config), for ``--resume`` on
    ``device``."""
    return typed_section(TrainConfig, {**saved["train"], "device": device}, "train", run.path / "config.json")


def head_regularisation(cfg: TrainConfig):
    """The heads' small-data regularisers of a run's settings (None when all are off)."""
    reg = HeadRegularisation(cfg.emotion_smoothing, cfg.head_dropout, cfg.head_mixup)
    return reg if any((reg.emotion_smoothing, reg.dropout, reg.mixup)) else None


def record_epochs(run: RunFolder, saved: dict, cfg: TrainConfig) -> None:
    """A resumed run whose length ``epochs_to_train`` extended: its config says the new length."""
    if saved["train"].get("epochs") != cfg.epochs:
        run.write_config(saved["kind"], **{**{k: v for k, v in saved.items() if k != "kind"}, "train": asdict(cfg)})


def batch_for(cfg: TrainConfig, rows: int, world: int, log=print) -> TrainConfig:
    """``cfg`` with a batch the split can fill: a batch larger than the rows each process reads
    becomes all of them, with a line saying so (a run that would take no step is never started);
    fewer than 2 rows per process is an error (ITC contrasts pairs)."""
    per_rank = rows // world
    if per_rank < 2:
        raise RunError(f"{rows} training rows over {world} process(es): at least 2 per process are needed")
    if cfg.batch_size > per_rank:
        log(f"--batch-size {cfg.batch_size} is larger than the {per_rank} training rows"
            f"{' per process' if world > 1 else ''}: using {per_rank}")
        return replace(cfg, batch_size=per_rank)
    return cfg


def epochs_to_train(run: RunFolder, cfg: TrainConfig, extend_to: int | None, log=print) -> TrainConfig:
    """On --resume, what is left to train: a finished run continues only to more epochs
    (``extend_to``, the user's --epochs), and otherwise stops with one line instead of exiting
    having done nothing."""
    latest = run.latest_checkpoint()
    done = run.checkpoint_state(latest)["epoch"] + 1 if latest else 0
    if extend_to is not None and extend_to != cfg.epochs:
        if extend_to < done:
            raise RunError(f"{run} has trained {done} epochs already; --epochs {extend_to} cannot take them back")
        log(f"extending {run} from {cfg.epochs} to {extend_to} epochs (the learning-rate schedule stretches to the "
            "new end)")
        cfg = replace(cfg, epochs=extend_to)
    if done >= cfg.epochs:
        raise RunError(f"{run} has trained all its {cfg.epochs} epochs; pass --epochs N (more than {cfg.epochs}) with "
                       "--resume to train it further")
    return cfg


MAX_AU_POS_WEIGHT = 20.0
AU_WEIGHTINGS = ("frequency", "f1", "frequency-f1", "none")


def au_pos_weight(aus: np.ndarray, weighting: str = "frequency", f1_target: float = 0.5) -> list[float]:
    """Each AU's positive-class weight [12] from training labels [N, 12] (-1 = missing).

    'frequency': its negatives over its positives, between 1 and 20 (0.5 of the sigmoid then marks
    the AU's training frequency: a balanced decision). 'f1': 2 / f1_target - 1 for every AU. A loss
    whose positives weigh w puts 0.5 of the sigmoid at the calibrated probability 1 / (1 + w), and
    the threshold on calibrated probabilities that maximises F1 is half the best F1 reached
    (Lipton, Elkan & Narayanaswamy, "Optimal thresholding of classifiers to maximize F1 measure", 2014),
    whatever the AU's frequency: w = 2 / F - 1 makes 0.5 that threshold for an AU whose best F1 is
    F (``f1_weight``). 'frequency-f1': the larger of the two: an AU the model cannot yet separate is
    best called at its frequency (its best F1 is then near twice its frequency, which is what the
    frequency weight assumes), a frequent AU it separates at the F1 weight's threshold. 'none':
    all 1 (plain BCE; 0.5 then marks probability 0.5)."""
    if weighting not in AU_WEIGHTINGS:
        raise ValueError(f"au_weighting: expected one of {', '.join(AU_WEIGHTINGS)}, got {weighting!r}")
    if not 0 < f1_target <= 1:
        raise ValueError(f"au_f1_target: expected a number in (0, 1], got {f1_target!r}")
    aus = np.asarray(aus)
    pos, neg = (aus == 1).sum(0), (aus == 0).sum(0)
    if weighting == "none":
        return [1.0] * aus.shape[1]
    f1 = f1_weight(f1_target)
    if weighting == "f1":
        return [float(f1)] * aus.shape[1]
    frequency = [float(np.clip(n / p, 1.0, MAX_AU_POS_WEIGHT)) if p else 1.0 for p, n in zip(pos, neg)]
    return [max(w, f1) for w in frequency] if weighting == "frequency-f1" else frequency


def f1_weight(f1_target: float) -> float:
    """The positive weight 2 / F - 1 that makes 0.5 the F1-optimal threshold for an AU whose best
    F1 is F (0.5: 3), at most 20 as the frequency weights are."""
    return float(min(2.0 / f1_target - 1.0, MAX_AU_POS_WEIGHT))


def au_loss_line(cfg: TrainConfig, pos_weight: list[float]) -> str:
    """The line a run prints about its AU loss weights (``au_pos_weight``'s for ``cfg``)."""
    span = f"{min(pos_weight):.3g} to {max(pos_weight):.3g}"
    return {"frequency": f"AU loss: each AU's positives weigh its training negatives/positives ratio "
                         f"({span}; --au-weighting frequency)",
            "f1": f"AU loss: every AU's positives weigh {pos_weight[0]:.3g} (--au-weighting f1: 0.5 is the "
                  f"F1-optimal threshold for an AU F1 of {2 / (1 + pos_weight[0]):.3g})",
            "frequency-f1": f"AU loss: each AU's positives weigh its training negatives/positives ratio, at least "
                            f"{f1_weight(cfg.au_f1_target):.3g} ({span}; --au-weighting frequency-f1)",
            "none": "AU loss: plain BCE (--au-weighting none)"}[cfg.au_weighting]


def seed_everything(seed: int, deterministic: bool = True, device: str = "cpu") -> None:
    """Seed every generator; ``deterministic`` also restricts torch to deterministic algorithms:
    an op that has none is an error, not a silent difference. On CUDA that also needs cuBLAS's
    fixed workspace (set here, before the first matrix product of the process) and makes
    attention's backward take its deterministic path."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then cosine decay to 0 at ``total``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices only (not on biases, norms, temperatures). The
    fused (one-kernel) update on CUDA. ``cfg`` must be resolved (``TrainConfig.resolved``): an
    'auto' learning rate is decided by the preset and the run's length, not here."""
    if cfg.lr is None:
        raise ValueError("make_optimizer: the learning rate is still 'auto'; resolve the settings first "
                         "(TrainConfig.resolved(preset, total_steps))")
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    fused = torch.device(cfg.device).type == "cuda"
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, **({"fused": True} if fused else {}))


def train_step(batch, losses_of, optimizer, lr: float, precision: str, device) -> object:
    """One optimisation step: the forward under the run's precision (bf16 autocast keeps the
    float32 master weights), backward, update. Returns the forward's ``StepOutput``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(precision, device):
        out = losses_of(batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def train_epoch(batches, losses_of, optimizer, step: int, total_steps: int, cfg: TrainConfig, progress=None,
                average: WeightAverage | None = None):
    """One pass over ``batches`` (``train_step`` with the scheduled lr; then ``average``'s update,
    when the run keeps one). Returns the new step count
    and the epoch's mean losses and timing. Losses are summed where they are computed and read
    once at the end, so the steps of an epoch queue on a GPU without waiting for each other."""
    sums, n_batches, n_samples, t0 = {}, 0, 0, time.perf_counter()
    for batch in batches:
        out = train_step(batch, losses_of, optimizer, lr_at(step, total_steps, cfg), cfg.precision, cfg.device)
        if average is not None:
            average.update()
        step += 1
        n_batches += 1
        size = len(batch["emotion"]) if isinstance(batch, dict) else len(batch)
        n_samples += size
        for k, v in {"loss": out.loss.detach(), **out.logs}.items():
            sums[k] = sums[k] + v.double() if k in sums else v.double()
        if progress:
            progress(size)
    seconds = round(time.perf_counter() - t0, 3)
    return step, {"seconds": seconds, "samples": n_samples,
                  "train": {f"train_{k}": float(v) / max(n_batches, 1) for k, v in sums.items()}}


def resume_latest(run: RunFolder, model: torch.nn.Module, optimizer, generator: torch.Generator | None = None,
                  log=print, average: WeightAverage | None = None) -> tuple[int, int]:
    """Restore model, optimizer, the weight average (when the run keeps one) and random states
    from the run's latest checkpoint; returns (the epoch to start at, the step count)."""
    ckpt = run.latest_checkpoint()
    if ckpt is None:  # stopped before its first epoch ended: the model is as a new run's (same seed)
        if distributed.rank() == 0:
            run.keep_log_until(0)
        log(f"{run}: no checkpoint yet (it stopped before its first epoch ended): starting it again at epoch 1 "
            "with its recorded settings")
        return 0, 0
    config = run.config()
    run.require_record(ckpt, config)
    rank, world = distributed.rank(), distributed.world_size()
    written_by = RunFolder.checkpoint_state(ckpt).get("world_size", config.get("world_size"))
    if written_by is not None and written_by != world:
        raise RunError(f"--resume {run}: its checkpoint {ckpt.name} was written by a run of {written_by} "
                       f"process{'es' if written_by > 1 else ''}, this is {world}: the steps per epoch, the learning-rate "
                       f"schedule and each process's random state depend on it; resume it with {written_by} "
                       "(torchrun --nproc_per_node x --nnodes)")
    state, rng = load_checkpoint(ckpt, model, optimizer, average)
    if rank == 0:
        run.keep_log_until(state["epoch"] + 1)
    own = rank_rng(rng, rank)
    torch.set_rng_state(own["torch"])
    if generator is not None:
        generator.set_state(own["itm"])
    log(f"resuming {run} after epoch {state['epoch'] + 1}")
    return state["epoch"] + 1, state["step"]


def rng_state(generator: torch.Generator | None = None) -> dict:
    """The random states a checkpoint keeps: torch's, and the ITM sampling generator's."""
    return {"torch": torch.get_rng_state(), **({"itm": generator.get_state()} if generator is not None else {})}


def every_rank_rng(state) -> dict:
    """``state()`` (a process's random states) of every process, as a checkpoint keeps them:
    rank 0's under their own names, rank k's as ``rank<k>:<name>`` (each process seeds its own
    generators, so each resumes its own). A collective: every rank calls it."""
    out = {}
    for k, states in enumerate(distributed.gather_objects(state())):
        out.update({(name if k == 0 else f"rank{k}:{name}"): v for name, v in states.items()})
    return out


def rank_rng(rng: dict, rank: int) -> dict:
    """Process ``rank``'s random states from a checkpoint's (``every_rank_rng``); rank 0's in a
    checkpoint from before each process's were kept."""
    own = {k.split(":", 1)[1]: v for k, v in rng.items() if k.startswith(f"rank{rank}:")}
    return own or {k: v for k, v in rng.items() if ":" not in k}


LOG_KEYS = ("epoch", "train_loss", "val_au_f1", "val_emotion_mean_acc", "samples_per_s", "seconds")
CHANCE_EPOCHS = 3  # validation at chance this many epochs in a row is worth a warning


def fit(run: RunFolder, model: torch.nn.Module, optimizer, cfg: TrainConfig, *, batches, losses_of, validate,
        rng_state, start_epoch: int, step: int, total_steps: int, max_epochs_this_run: int | None = None,
        progress=None, log=print, average: WeightAverage | None = None) -> dict | None:
    """The epoch loop of every trainer: ``batches(epoch)`` through ``losses_of`` (the model, or its
    DDP wrapper) with the scheduled lr; then on rank 0 ``validate()`` (the log row's validation
    columns), a row in the run's log, a checkpoint (with ``rng_state()``; the best-scoring epoch's
    is kept as ``best``, with the AU thresholds validation chose) and a log line. With ``average``
    (a ``WeightAverage``), validation and the checkpoint's weights are the average's, and the
    trained weights go beside it for resuming. Returns the last epoch's row (None when no epoch ran)."""
    rank, world = distributed.rank(), distributed.world_size()
    end_epoch = cfg.epochs if max_epochs_this_run is None else min(cfg.epochs, start_epoch + max_epochs_this_run)
    row, best, at_chance = None, run.best_score() if rank == 0 else None, 0
    for epoch in range(start_epoch, end_epoch):
        model.train()
        step, stats = train_epoch(batches(epoch), losses_of, optimizer, step, total_steps, cfg, progress, average)
        # a loss that is not finite has already made the weights so (the optimiser stepped them)
        loss = stats["train"].get("train_loss", 0.0)
        if distributed.max_over_ranks(int(not math.isfinite(loss)), next(model.parameters()).device):  # every rank stops, none saves
            last = run.latest_checkpoint() if rank == 0 else None
            raise RunError(f"{run}: training diverged in epoch {epoch + 1} (mean loss {loss} on rank {rank}); "
                           "nothing of this epoch was saved"
                           + (f", the last checkpoint is {last.name}" if last is not None else "")
                           + ": lower --lr (or train in fp32) and start again")
        rngs = every_rank_rng(rng_state)
        row = {"epoch": epoch + 1, "rank": rank, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "seconds": stats["seconds"],
               "samples_per_s": round(stats["samples"] * world / stats["seconds"], 2) if stats["seconds"] else None,
               **stats["train"]}
        if rank == 0:
            with average.applied() if average is not None else contextlib.nullcontext():
                row.update(validate())
                thresholds = row.pop("au_thresholds", None)
                row["score"] = selection_score(row, cfg.tasks)
                improved = best is None or row["score"] > best
                best = row["score"] if improved else best
                run.append_log(row)
                save_checkpoint(run, epoch, model, optimizer,
                                {"step": step, "score": row["score"], "au_thresholds": thresholds, "world_size": world,
                                 **({"weight_average": average.state()} if average is not None else {})},
                                rngs, best_score=row["score"] if improved else None,
                                training_tensors=average.raw() if average is not None else None)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                         if k in LOG_KEYS) + (" (best so far)" if improved and epoch > 0 else ""))
            at_chance = at_chance + 1 if _at_chance(row, cfg.tasks) else 0
            if at_chance == CHANCE_EPOCHS:
                log(f"warning: validation has stayed at chance for {CHANCE_EPOCHS} epochs (emotion mean accuracy "
                    f"{row.get('val_emotion_mean_acc', float('nan')):.3f}, AU mean F1 {row.get('val_au_f1', float('nan')):.3f} "
                    f"against {row.get('val_au_f1_all_active', float('nan')):.3f} for calling every AU active): check the "
                    "learning rate and warm-up, the labels, and that the features carry the faces")
        distributed.barrier()
    return row


def _at_chance(row: dict, tasks: str) -> bool:
    """Validation no better than guessing: emotion mean accuracy within 2 points of 1/8, and AU
    mean F1 no better than calling every AU active (each for the tasks the run trains)."""
    emotion = row.get("val_emotion_mean_acc", 0.0) <= 1 / N_EMOTIONS + 0.02
    au = row.get("val_au_f1", 0.0) <= row.get("val_au_f1_all_active", 1.0)
    return {"both": emotion and au, "emotion": emotion, "au": au}[tasks]
