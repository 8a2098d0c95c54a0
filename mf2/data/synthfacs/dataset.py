"""The SynthFACS data set: the seeded sampling of every face (identity per 'video', an
expression from the EMFACS prototypes, pose, lighting) and the writer of images, manifest and
stats. Every sample is a pure function of (seed, index): same seed -> byte-identical files, in
any order and with any number of workers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mf2.data.labels import AUS, EMOTIONS, PROTOTYPES
from mf2.data.manifest import write_manifest
from mf2.data.stats import dataset_stats
from mf2.data.synthfacs.face import DEPTH, Identity, Pose, face_landmarks, project
from mf2.data.synthfacs.render import Lighting, render
from mf2.io import atomic_write_text, save_image


@dataclass
class Expression:
    emotion: int
    intensities: dict  # AU -> rendered intensity in [0, 1] (trace activations below 0.2)
    labels: dict  # AU -> 0/1 label (after label noise)


def _covers_prototype(active: set) -> bool:
    return any(set(core) <= active for core, _ in PROTOTYPES.values())


def sample_expression(emotion: int, rng: np.random.Generator, label_noise: float = 0.02) -> Expression:
    """AUs for an emotion by the EMFACS prototypes: core AUs dropped at random (at least half
    kept), optional ones added, a stray AU now and then; Neutral has none; Other draws
    non-prototypical combinations. Active AUs get intensities in [0.35, 1]; some inactive ones
    get sub-threshold traces. Labels are the active set with a little label noise."""
    name = EMOTIONS[emotion]
    if name == "Neutral":
        active = set()
    elif name == "Other":
        while True:
            active = set(rng.choice(AUS, size=int(rng.integers(1, 4)), replace=False).tolist())
            if not _covers_prototype(active):
                break
    else:
        core, optional = PROTOTYPES[name]
        while True:
            kept = {au for au in core if rng.random() > 0.15}
            if len(kept) >= math.ceil(len(core) / 2):
                break
        active = kept | {au for au in optional if rng.random() < 0.5}
        if rng.random() < 0.15:
            active.add(str(rng.choice([au for au in AUS if au not in active])))
    intensities = {}
    for au in AUS:
        if au in active:
            intensities[au] = float(rng.uniform(0.35, 1.0))
        else:
            intensities[au] = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.25 else 0.0
    labels = {au: int(au in active) for au in AUS}
    for au in AUS:
        if rng.random() < label_noise:
            labels[au] = 1 - labels[au]
    return Expression(emotion=emotion, intensities=intensities, labels=labels)


@dataclass
class SampleSpec:
    index: int
    video: int
    split: str
    identity: Identity
    expression: Expression
    pose: Pose
    lighting: Lighting
    noise_seed: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"synth{self.index:06d}"


def sample_specs(n: int, seed: int, images_per_video: int = 10, val_fraction: float = 0.2,
                 label_noise: float = 0.02) -> list[SampleSpec]:
    """The full, cheap description of every sample. Emotions are exactly balanced (each class
    n/8, +-1) and shuffled; identities ('videos') hold ``images_per_video`` images; a seeded
    ``val_fraction`` of the videos is the validation split."""
    if n < 1:
        raise ValueError(f"n: expected at least 1 image, got {n}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 0])
    emotions = np.arange(n) % len(EMOTIONS)
    rng.shuffle(emotions)
    n_videos = math.ceil(n / images_per_video)
    val_videos = set(rng.permutation(n_videos)[: int(round(n_videos * val_fraction))].tolist())
    identities = [Identity.sample(np.random.default_rng([seed, 1, v])) for v in range(n_videos)]
    specs = []
    for i in range(n):
        r = np.random.default_rng([seed, 2, i])
        video = i // images_per_video
        specs.append(SampleSpec(
            index=i, video=video, split="val" if video in val_videos else "train", identity=identities[video],
            expression=sample_expression(int(emotions[i]), r, label_noise), pose=Pose.sample(r),
            lighting=Lighting.sample(r), noise_seed=[seed, 3, i]))
    return specs


def render_spec(spec: SampleSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    return render(spec.identity, spec.expression.intensities, spec.pose, spec.lighting, size,
                  np.random.default_rng(spec.noise_seed))


def landmarks_of(spec: SampleSpec, size: int) -> np.ndarray:
    """The sample's landmarks in pixels, without rendering it."""
    lm = face_landmarks(spec.identity, spec.expression.intensities)
    return project(lm, DEPTH, spec.pose, size)


def _render_to(args):
    spec, size, path = args
    image, _ = render_spec(spec, size)
    save_image(path, image, format="PNG", compress_level=6)
    return spec.index


def manifest_row(spec: SampleSpec, size: int) -> dict:
    lm = landmarks_of(spec, size)
    return {"id": spec.id, "image": f"images/{spec.id}.png", "video": f"synth_video{spec.video:05d}",
            "split": spec.split, "emotion": EMOTIONS[spec.expression.emotion], **spec.expression.labels,
            "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in lm]}


def write_synthfacs(out: Path, n: int, size: int = 112, seed: int = 0, images_per_video: int = 10,
                    val_fraction: float = 0.2, label_noise: float = 0.02, workers: int | None = None,
                    progress=None) -> dict:
    """Write images/, manifest.jsonl and stats.json. Images already on disk are kept (each
    file is written complete or not at all), so a killed run resumes where it stopped. (The
    pixel baseline a trained model must beat is added by ``mf2.evaluation.baselines``.)"""
    if size not in (112, 224):
        raise ValueError(f"size: expected 112 or 224, got {size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    specs = sample_specs(n, seed, images_per_video, val_fraction, label_noise)
    todo = [(s, size, str(out / "images" / f"{s.id}.png")) for s in specs
            if not (out / "images" / f"{s.id}.png").exists()]
    workers = workers or os.cpu_count() or 1
    done = 0
    if workers > 1 and len(todo) > 8:
        import multiprocessing as mp

        with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_to, todo, chunksize=8):
                done += 1
                if progress:
                    progress(1)
    else:
        for args in todo:
            _render_to(args)
            done += 1
            if progress:
                progress(1)
    rows = [manifest_row(s, size) for s in specs]
    write_manifest(rows, out / "manifest.jsonl")
    stats = dataset_stats(rows)
    stats["synthfacs"] = {"n": n, "size": size, "seed": seed, "images_per_video": images_per_video,
                          "val_fraction": val_fraction, "label_noise": label_noise,
                          "rendered": done, "reused": n - len(todo)}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats
