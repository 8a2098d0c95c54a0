"""``mf2 predict``: a trained run on new images and videos, one row per face (SPEC §9).

Each frame goes through the extraction's own image path, in memory: dlib faces (every face;
or, with ``face='aligned'``, the whole image as one aligned crop) -> the alignment the cache
used -> the frozen vision backbone -> ``au_region_pool`` at the AU centres -> the run's model
(images only, Appendix G). The backbone, crop size and pooling settings are those the run's
cache was extracted with (saved in the run's ``config.json``). With ``explain``, ITG decodes a
description: Emo-VL's caption of the face and AU-VL's sentence for each active AU, mapped from
the ITG sub-vocabulary back through the text encoder's tokenizer.

Frames are predicted in batches of ``batch_size`` faces and then dropped (``annotate`` keeps a
batch's frames until they are drawn), so a long video streams in bounded memory. Output rows
are written as they come (CSV or JSON, to a temporary file renamed at the end).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mf2.data.labels import AU_NAMES, AUS, EMOTIONS
from mf2.features.backbones import BackboneError, load_tokenizer, load_vision
from mf2.features.extract import visual_features
from mf2.features.faces import FaceFinder, align, apply, invert, resize_square
from mf2.models.qformer import UNK
from mf2.prediction.sources import expand, frames


@dataclass
class PredictSettings:
    face: str = "detect"  # 'detect': every face dlib finds; 'aligned': each image is one aligned face crop
    explain: str | None = None  # None | 'greedy' | 'beam'
    beams: int = 3
    batch_size: int = 32  # faces per forward pass
    threshold: float = 0.5  # an AU is active (explained, drawn) at this probability
    min_face_score: float = 0.25  # dlib detection score a face needs (dlib's own threshold, 0, admits
    # textures such as badges and prints at scores near 0; clear faces score about 1 and above)
    device: str = "cpu"
    vision_weights: str | None = None  # when the run's cache used --vision-weights FILE
    allow_download: bool = False


@dataclass
class AlignedFace:
    """A face found in a frame, its aligned crop, and (after ``Predictor.predict``) its result."""

    box: tuple  # (x0, y0, x1, y1) in image pixels
    landmarks: np.ndarray  # [68, 2] in image pixels
    crop: np.ndarray  # aligned RGB crop [S, S, 3]
    crop_landmarks: np.ndarray  # [68, 2] in crop pixels
    transform: np.ndarray  # 2x3, image -> crop
    score: float | None = None  # detection score (None: --face aligned)
    result: dict = field(default_factory=dict)


def run_features(run) -> dict:
    """The feature signature a run was trained on (a DFN run: its base run's)."""
    run = Path(run)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{run}: not a run folder (no config.json)")
    config = json.loads(config_path.read_text())
    if config.get("kind") == "dfn":
        from mf2.evaluation.evaluate import base_run

        return run_features(base_run(run, config))
    if "features" in config:
        return config["features"]
    from mf2.features.store import FeatureStore  # runs from before the signature was saved

    try:
        return FeatureStore.open(config["cache"]).signature
    except Exception:
        raise ValueError(f"{run}: its config has no feature settings and its cache {config['cache']} cannot be "
                         f"opened; prediction needs to know how the features were made") from None


class Predictor:
    def __init__(self, run, settings: PredictSettings | None = None):
        from mf2.evaluation.evaluate import load_run

        s = self.settings = settings or PredictSettings()
        if s.face not in ("detect", "aligned"):
            raise ValueError(f"face: expected 'detect' or 'aligned', got {s.face!r}")
        if s.explain not in (None, "greedy", "beam"):
            raise ValueError(f"explain: expected 'greedy' or 'beam', got {s.explain!r}")
        self.signature = sig = run_features(run)
        self.model, self.config, self.checkpoint = load_run(run, s.device)
        self.foundation = getattr(self.model, "mf2", self.model)  # a DFN run explains with its frozen MF²
        v = sig["vision"]
        self.vision = load_vision(v["name"], s.vision_weights, s.allow_download, s.device)
        if self.vision.weights_id != v["weights"]:
            raise BackboneError(f"{run} was trained on {v['name']} features from weights {v['weights']}, but "
                                f"{self.vision.source} is {self.vision.weights_id}: pass --vision-weights FILE")
        self.size = v["image_size"]
        self.pooling = sig["pooling"]
        self.precision = sig.get("precision", "fp32")
        self.finder = FaceFinder()
        self.tokenizer = load_tokenizer(sig["text"]["name"], s.allow_download) if s.explain else None

    def faces(self, image: np.ndarray) -> list[AlignedFace]:
        """Every face of an image, aligned as in extraction (largest first)."""
        S = self.size
        if self.settings.face == "aligned":
            crop, m = resize_square(image, S)
            lm_crop = self.finder.landmarks(crop, (0, 0, S - 1, S - 1))
            inverse = invert(m)
            corners = apply(inverse, np.array([[0.0, 0.0], [S, S]]))
            return [AlignedFace(tuple(float(c) for c in corners.ravel()), apply(inverse, lm_crop), crop, lm_crop, m)]
        out = []
        for f in self.finder.detect(image, self.settings.min_face_score):
            crop, lm_crop, m = align(image, f.landmarks, S)
            out.append(AlignedFace(tuple(float(c) for c in f.box), f.landmarks, crop, lm_crop, m, round(f.score, 3)))
        return out

    @torch.no_grad()
    def predict(self, faces: list[AlignedFace]) -> None:
        """Fill each face's ``result``: AU and emotion probabilities (and the explanation)."""
        if not faces:
            return
        p = self.pooling
        tokens, au_tokens = visual_features(self.vision, np.stack([f.crop for f in faces]),
                                            np.stack([f.crop_landmarks for f in faces]), p["R"], p["window_rulers"],
                                            p["padding"], self.precision)
        device = self.settings.device
        tokens = torch.from_numpy(tokens.astype(np.float32)).to(device)
        au_tokens = torch.from_numpy(au_tokens.astype(np.float32)).to(device)
        emo, au = (t.cpu().numpy() for t in self.model.predict(tokens, au_tokens))
        texts = self.explain(tokens, au_tokens, au) if self.settings.explain else [None] * len(faces)
        for i, f in enumerate(faces):
            f.result = {"aus": {a: float(au[i, k]) for k, a in enumerate(AUS)},
                        "emotions": {e: float(emo[i, k]) for k, e in enumerate(EMOTIONS)},
                        "emotion": EMOTIONS[int(emo[i].argmax())]}
            if texts[i] is not None:
                f.result["explanation"] = texts[i]

    def explain(self, tokens, au_tokens, au_probs: np.ndarray) -> list[str]:
        """Emo-VL's generated caption, then AU-VL's sentence for each active AU, per face."""
        model, sig = self.foundation, self.signature["text"]
        caps = sig.get("caps", {})
        beams = self.settings.beams if self.settings.explain == "beam" else 1
        end = int(model.sub_ids(torch.tensor([self.tokenizer.sep_token_id]))[0]) \
            if self.tokenizer.sep_token_id is not None else -1
        feats = model.image_features(tokens, au_tokens)
        n = tokens.shape[0]
        parts = [[] for _ in range(n)]  # (order, text) per face
        if model.emo_vl is not None and model.cfg.emo_text in sig.get("types", []):
            for i, seq in enumerate(model.emo_vl.generate(feats["emo_vision"], end, caps.get(model.cfg.emo_text, 61),
                                                          beams)):
                parts[i].append((-1, self._words(seq)))
        if model.au_vl is not None and sig.get("au_sentences"):
            # each active AU's own sequence, prompted with its name ("AU12 (Lip Corner Puller)") when the
            # name's tokens are in the ITG vocabulary: the decoder then says what it sees of that AU
            vision = feats["au_vision"].view(n, len(AUS), *feats["au_vision"].shape[1:])
            for k, au in enumerate(AUS):
                faces = np.flatnonzero(au_probs[:, k] >= self.settings.threshold)
                if not len(faces):
                    continue
                seqs = model.au_vl.generate(vision[torch.from_numpy(faces), k], end, caps.get("au_sentences", 32),
                                            beams, self._prompt(f"{au} ({AU_NAMES[au]})"))
                for i, seq in zip(faces, seqs):
                    parts[i].append((k, self._words(seq)))
        return [" ".join(text for _, text in sorted(p, key=lambda x: x[0])) for p in parts]

    def _prompt(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        sub = self.foundation.sub_ids(torch.tensor(ids)).tolist()
        return [] if UNK in sub else sub

    def _words(self, seq: list[int]) -> str:
        vocab = self.foundation.cfg.vocab
        ids = [vocab[i] for i in seq if vocab[i] >= 0]
        return tidy(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))


def tidy(text: str) -> str:
    """Readable text from an uncased WordPiece decode: no space before punctuation or inside
    brackets, AU names in capitals, sentences capitalised."""
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text.strip())
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\bau\s?(\d+)", r"AU\1", text)
    names = {name.lower(): name for name in AU_NAMES.values()}
    text = re.sub(r"\(([a-z ]+)\)", lambda m: f"({names.get(m.group(1), m.group(1))})", text)
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


CSV_COLUMNS = ["source", "frame", "time", "face", "status", "face_score", "x0", "y0", "x1", "y1", *AUS, *EMOTIONS,
               "emotion", "explanation", "landmarks"]


class RowWriter:
    """Rows to CSV (``.csv``, or stdout when ``path`` is None) or JSON (``.json``), streamed."""

    def __init__(self, path, checkpoint: str):
        self.path = Path(path) if path else None
        self.format = "json" if self.path and self.path.suffix.lower() == ".json" else "csv"
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.path.with_name(f".{self.path.name}.tmp")
            self.file = open(self.tmp, "w", newline="")
        else:
            self.file = sys.stdout
        self.rows = 0
        if self.format == "json":
            self.file.write(json.dumps({"checkpoint": checkpoint})[:-1] + ', "rows": [\n')
        else:
            self.csv = csv.DictWriter(self.file, fieldnames=CSV_COLUMNS, lineterminator="\n")
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.format == "json":
            self.file.write((",\n" if self.rows else "") + json.dumps(row))
        else:
            flat = {k: row.get(k) for k in ("source", "frame", "time", "face", "status")}
            if row.get("box"):
                flat.update(zip(("x0", "y0", "x1", "y1"), (round(v, 1) for v in row["box"])),
                            face_score=row["face_score"])
                flat.update({k: round(v, 6) for k, v in {**row["aus"], **row["emotions"]}.items()})
                flat.update(emotion=row["emotion"], explanation=row.get("explanation"),
                            landmarks=json.dumps(row["landmarks"]))
            self.csv.writerow(flat)
        self.rows += 1

    def close(self, skipped: list[dict]) -> None:
        if self.format == "json":
            self.file.write("\n], " + json.dumps({"skipped": skipped})[1:] + "\n")
        if self.path:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        else:
            self.file.flush()


def face_row(frame, index: int, face: AlignedFace) -> dict:
    return {"source": frame.source, "frame": frame.frame, "time": frame.time, "face": index, "status": "ok",
            "face_score": face.score, "box": [round(v, 1) for v in face.box],
            "landmarks": np.round(face.landmarks, 1).tolist(), **face.result}


def predict(run, inputs, out=None, annotate=None, fps: float | None = 1.0, settings: PredictSettings | None = None,
            progress=None, log=print) -> dict:
    """Predict every face of ``inputs`` (images, folders, globs, videos); returns a summary."""
    from mf2.prediction.annotate import Annotator

    settings = settings or PredictSettings()
    if settings.batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {settings.batch_size}")
    if fps is not None and fps < 0:
        raise ValueError(f"fps: expected a positive number (0 = every frame), got {fps}")
    files, problems = expand(inputs)
    skipped = [{"source": item, "error": why} for item, why in problems]
    for item in skipped:
        log(f"skipped {item['source']}: {item['error']}")
    if not files:
        raise ValueError("no input files to predict on" + (f" ({skipped[0]['source']}: {skipped[0]['error']})"
                                                           if skipped else ""))
    predictor = Predictor(run, settings)
    writer = RowWriter(out, str(predictor.checkpoint))
    annotator = Annotator(annotate, settings.threshold, predictor.pooling["window_rulers"]) if annotate else None
    counts = {"files": len(files), "frames": 0, "faces": 0, "frames_without_face": 0}
    pending, n_pending, last_source = [], 0, None

    def flush():
        nonlocal pending, n_pending
        predictor.predict([f for _, faces in pending for f in faces])
        for frame, faces in pending:
            if not faces:
                writer.write({"source": frame.source, "frame": frame.frame, "time": frame.time, "face": None,
                              "status": "no face"})
            for i, f in enumerate(faces):
                writer.write(face_row(frame, i, f))
            if annotator:
                annotator.write(frame, faces)
        pending, n_pending = [], 0

    try:
        for frame in frames(files, fps):
            if progress and frame.source != last_source:
                progress(1)
                last_source = frame.source
            if frame.error:
                skipped.append({"source": frame.source, "frame": frame.frame, "error": frame.error})
                log(f"skipped {frame.source}" + (f" at frame {frame.frame}" if frame.frame is not None else "") +
                    f": {frame.error}")
                continue
            faces = predictor.faces(frame.image)
            counts["frames"] += 1
            counts["faces"] += len(faces)
            counts["frames_without_face"] += not faces
            if not annotator:
                frame.image = None
            pending.append((frame, faces))
            n_pending += max(1, len(faces))
            if n_pending >= settings.batch_size:
                flush()
        flush()
    finally:
        writer.close([{k: v for k, v in s.items() if v is not None} for s in skipped])
    return {**counts, "rows": writer.rows, "skipped": len(skipped), "out": str(out) if out else None,
            "annotated": annotator.written if annotator else 0, "checkpoint": str(predictor.checkpoint)}
