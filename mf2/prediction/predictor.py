"""The predictor: a trained run applied to faces in memory (SPEC §9).

Each frame goes through the extraction's own image path: dlib faces (every face; or, with
``face='aligned'``, the whole image as one aligned crop) -> the alignment the cache used -> the
frozen vision backbone -> ``au_region_pool`` at the AU centres -> the run's model (images only,
Appendix G). The backbone, crop size and pooling settings are those the run's cache was
extracted with (the feature signature saved with the run, or with an exported model folder).

``faces`` may be called from several threads at once (each thread gets its own dlib models:
dlib's detector is not safe to share); ``predict`` runs in one thread.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mf2.data.labels import EMOTIONS, per_au
from mf2.data.landmarks import mirror_landmarks
from mf2.devices import autocast, resolve_precision
from mf2.features.backbones import BackboneError, load_tokenizer, load_vision
from mf2.features.extract import visual_features
from mf2.features.face_align import DEFAULT_MIN_SCORE, FaceFinder, align, apply, canonical_landmarks, invert, \
    resize_square, resolve_detector
from mf2.prediction.pose import head_pose
from mf2.models.explain import DECODINGS, GROUNDINGS, Explainer
from mf2.io import verify_folder
from mf2.runs import RunFolder, load_model



@dataclass
class PredictSettings:
    face: str = "detect"  # 'detect': every face dlib finds; 'aligned': each image is one aligned face crop
    threshold: float | None = None  # an AU is active (explained, drawn) at this probability (None: the
    # run's per-AU thresholds, tuned on its validation split; 0.5 for a run without them)
    min_face_score: float | None = None  # detection score a face needs (None: the detector's default,
    # DEFAULT_MIN_SCORE: HOG 0.25 -- dlib's own threshold, 0, admits badges and prints; clear faces
    # score about 1 and above --, CNN 0.3, MTCNN 0.7, its face probability)
    face_detector: str = "auto"  # 'hog', 'cnn', 'mtcnn' or 'auto' (mf2.features.face_align.resolve_detector)
    device: str = "cpu"
    precision: str = "auto"  # of the model's forward (the backbone keeps the cache's precision)
    vision_weights: str | None = None  # when the run's cache used --vision-weights FILE
    allow_download: bool = False
    threads: int | None = None  # torch's intra-op threads while a batch runs (None: torch's own setting)
    tta: str | None = None  # 'flip': average each face's probabilities with its mirrored view's (explanations: the face's own)


@dataclass
class AlignedFace:
    """A face found in a frame, its aligned crop, and (after ``Predictor.predict``) its result."""

    box: tuple  # (x0, y0, x1, y1) in image pixels
    landmarks: np.ndarray  # [68, 2] in image pixels
    crop: np.ndarray | None  # aligned RGB crop [S, S, 3] (dropped once predicted)
    crop_landmarks: np.ndarray  # [68, 2] in crop pixels
    transform: np.ndarray  # 2x3, image -> crop
    score: float | None = None  # detection score (None: --face aligned)
    pose: tuple = (np.nan, np.nan, np.nan)  # (yaw, pitch, roll) degrees, from the landmarks (mf2.prediction.pose)
    track: int | None = None  # identity within its source (mf2.prediction.tracking); None: not tracked
    confirmed: bool = False  # found by MTCNN's finer stages alone and confirmed by dlib's CNN (a seed frame's)
    aus: np.ndarray | None = None  # [12] AU probabilities, in the order of ``AUS``
    emotions: np.ndarray | None = None  # [8] emotion probabilities, in the order of ``EMOTIONS``
    explanation: str | None = None
    explanation_consistent: bool | None = None  # the explanation names the heads' emotion and active AUs

    @property
    def emotion(self) -> str | None:
        """The top emotion (``EMOTIONS`` spelling), once predicted."""
        return None if self.emotions is None else EMOTIONS[int(np.argmax(self.emotions))]


class Predictor:
    """A run's model with the frozen backbone and face finder of its cache."""

    def __init__(self, run, settings: PredictSettings | None = None):
        s = self.settings = settings or PredictSettings()
        if s.face not in ("detect", "aligned"):
            raise ValueError(f"face: expected 'detect' or 'aligned', got {s.face!r}")
        self.detector_name = resolve_detector(s.face_detector)
        self.min_face_score = DEFAULT_MIN_SCORE[self.detector_name] if s.min_face_score is None else s.min_face_score
        if not np.isfinite(self.min_face_score):
            raise ValueError(f"min_face_score: expected a number, got {s.min_face_score!r}")
        if s.tta not in (None, "flip"):
            raise ValueError(f"tta: expected 'flip' or None, got {s.tta!r}")
        self.model_precision = resolve_precision(s.precision, s.device)
        self.signature = sig = RunFolder(run).features()
        self.model, self.config, self.checkpoint = load_model(run, s.device)
        tuned = RunFolder.checkpoint_state(self.checkpoint).get("au_thresholds")
        self.thresholds = per_au(s.threshold if s.threshold is not None else tuned if tuned else 0.5)
        v = sig["vision"]
        self.vision = load_vision(v["name"], s.vision_weights, s.allow_download, s.device)
        if self.vision.weights_id != v["weights"]:
            raise BackboneError(f"{run} was trained on {v['name']} features from weights {v['weights']}, but "
                                f"{self.vision.source} is {self.vision.weights_id}: pass --vision-weights FILE")
        self.size = v["image_size"]
        self.pooling = sig["pooling"]
        self.backbone_precision = sig.get("precision", "fp32")
        # an aligned crop gets the landmarks its cache's crops got: the canonical template when the
        # cache was extracted with it, else dlib's (manifest landmarks do not exist for new images)
        self.canonical = s.face == "aligned" and sig.get("landmarks") == "canonical"
        # the text encoder's tokenizer maps generated ids to words: an exported folder carries its own
        self.run_path = Path(run)
        folder = Path(run) / "tokenizer"
        self.tokenizer_source = str(folder) if folder.is_dir() else sig["text"]["name"]
        self._local = threading.local()
        self._tokenizer = None
        self._explainers: dict = {}

    @property
    def finder(self) -> FaceFinder:
        """The face detector and dlib's landmark model, loaded on first use in each thread (dlib's
        detectors are not safe to share; MTCNN runs on the predictor's device)."""
        finder = getattr(self._local, "finder", None)
        if finder is None:
            finder = self._local.finder = FaceFinder(self.detector_name, self.settings.device)
        return finder

    @property
    def detect_batch(self) -> int:
        """Frames the face detector takes at once: MTCNN on a GPU batches frames; on a CPU one at a time."""
        return 8 if self.detector_name == "mtcnn" and torch.device(self.settings.device).type != "cpu" else 1

    def explainer(self, decoding: str, beams: int = 3, grounding: str = "heads") -> Explainer:
        """The ITG decoder for ``decoding`` ('greedy' or 'beam') and ``grounding`` ('heads':
        worded from the heads' decisions; 'none': the decoder alone), made on first use (a DFN
        run explains with its frozen MF²)."""
        if decoding not in DECODINGS:
            raise ValueError(f"explain: expected 'greedy' or 'beam', got {decoding!r}")
        if grounding not in GROUNDINGS:
            raise ValueError(f"grounding: expected 'heads' or 'none', got {grounding!r}")
        key = (decoding, beams, grounding)
        if key not in self._explainers:
            if self._tokenizer is None:
                if Path(self.tokenizer_source).parent == Path(self.run_path):  # an exported folder's own
                    verify_folder(self.tokenizer_source, self.run_path, "export the run again")
                self._tokenizer = load_tokenizer(self.tokenizer_source, self.settings.allow_download)
            self._explainers[key] = Explainer(getattr(self.model, "mf2", self.model), self._tokenizer,
                                              self.signature["text"], decoding, beams, self.thresholds, grounding)
        return self._explainers[key]

    def faces(self, image: np.ndarray) -> list[AlignedFace]:
        """Every face of an image, aligned as in extraction (largest first)."""
        return self.find([image])[0][0]

    def find(self, images: list[np.ndarray], fine: bool = False) -> list[tuple[list[AlignedFace], list]]:
        """Per image, its faces aligned as in extraction (largest first) with their head pose, and
        the near-misses (``mf2.features.face_align.Face``s scoring under ``min_face_score``).
        ``fine``: MTCNN's finer cascade, confirmed (``FaceFinder.find``; tracking's seed frames)."""
        S = self.size
        if self.settings.face == "aligned":
            out = []
            for image in images:
                crop, m = resize_square(image, S)
                lm_crop = canonical_landmarks() * S if self.canonical else self.finder.landmarks(crop, (0, 0, S - 1, S - 1))
                inverse = invert(m)
                corners = apply(inverse, np.array([[0.0, 0.0], [S, S]]))
                lm = apply(inverse, lm_crop)
                out.append(([AlignedFace(tuple(float(c) for c in corners.ravel()), lm, crop, lm_crop, m,
                                         pose=head_pose(lm))], []))
            return out
        out = []
        for image, found in zip(images, self.finder.find(images, self.min_face_score, fine=fine)):
            out.append(([self.aligned(image, f) for f in found.faces], found.near_misses))
        return out

    def aligned(self, image: np.ndarray, face) -> AlignedFace:
        """A found face (``mf2.features.face_align.Face``, e.g. a near-miss kept by tracking) aligned as in extraction."""
        crop, lm_crop, m = align(image, face.landmarks, self.size)
        return AlignedFace(tuple(float(c) for c in face.box), face.landmarks, crop, lm_crop, m, round(face.score, 3),
                           pose=head_pose(face.landmarks), confirmed=bool(getattr(face, "confirmed", False)))

    @torch.no_grad()
    def predict(self, faces: list[AlignedFace], explain: str | None = None, beams: int = 3,
                grounding: str = "heads") -> None:
        """Fill each face's AU and emotion probabilities (and with ``explain``, 'greedy' or
        'beam', its explanation, ``grounding`` as in ``explainer``) from its crop, in one batch;
        the crops are then dropped."""
        if not faces:
            return
        with intra_op_threads(self.settings.threads):
            self._predict(faces, explain, beams, grounding)

    def _features(self, crops: np.ndarray, landmarks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Global and AU tokens of aligned crops, made as the run's cache made them, on the device."""
        p = self.pooling
        tokens, au_tokens = visual_features(self.vision, crops, landmarks, p["R"], p["window_rulers"], p["padding"],
                                            self.backbone_precision, au_map=p.get("au_map", "last"),
                                            regions=p.get("regions", "table"))
        device = self.settings.device
        return (torch.from_numpy(tokens.astype(np.float32)).to(device),
                torch.from_numpy(au_tokens.astype(np.float32)).to(device))

    def _predict(self, faces: list[AlignedFace], explain: str | None, beams: int, grounding: str = "heads") -> None:
        crops, landmarks = np.stack([f.crop for f in faces]), np.stack([f.crop_landmarks for f in faces])
        tokens, au_tokens = self._features(crops, landmarks)
        device = self.settings.device
        explainer = self.explainer(explain, beams, grounding) if explain else None
        with autocast(self.model_precision, device):
            emo, au = (t.cpu().numpy() for t in self.model.predict(tokens, au_tokens))
            if self.settings.tta == "flip":  # the mirrored face, each AU's two centres swapped (as in training)
                mirrored = self._features(crops[:, :, ::-1], mirror_landmarks(landmarks, self.size))
                emo_m, au_m = (t.cpu().numpy() for t in self.model.predict(*mirrored))
                emo, au = (emo + emo_m) / 2, (au + au_m) / 2
            explained = explainer.explain(tokens, au_tokens, au, emo) if explainer else [None] * len(faces)
        for i, f in enumerate(faces):
            f.aus, f.emotions, f.crop = au[i], emo[i], None
            if explained[i] is not None:
                f.explanation, f.explanation_consistent = explained[i].text, explained[i].consistent


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` (None: unchanged) for a block, then restored.

    Prediction runs the model in one thread and finds faces in others: an OpenMP team as wide
    as the machine would then share its cores with the face finders (and with anything else
    running), and a team whose threads wait for a descheduled one wastes whole time slices."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
