"""``extract_features``: a manifest to a feature store (SPEC §4).

Per block of rows: decode -> face crop + 68 landmarks -> frozen vision backbone (global tokens
and spatial map) -> AU centres -> ``au_region_pool`` (native op) at both centres of each AU ->
frozen text encoder on every caption type and every AU's own sentence -> store. Identical
texts in a block are encoded once (template captions and per-AU sentences repeat). Bad images are
recorded (``meta/valid`` false, ``meta/error``) and counted; faces not found keep a fallback
crop and the canonical landmarks (``meta/face_found`` false) and are counted too.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

import mf2
from mf2.data.labels import AUS, CAPTION_COLUMN, CAPTION_TYPES, TEXT_CAPS
from mf2.data.landmarks import au_centres, au_regions, au_window_factors, mirror_landmarks, ruler
from mf2.data.manifest import Manifest
from mf2.features.backbones import load_text, load_vision
from mf2.features.faces import FaceFinder, ImageError, align, apply, canonical_landmarks, load_image, resize_square
from mf2.features.store import FeatureStore
from mf2.io import exclusive, naming, refuse_overlap
from mf2.ops import au_region_pool

STAGES = ("decode", "face", "vision", "pooling", "text", "write")
AUGMENTATIONS = ("flip",)
# --augment auto stores the mirrored views when the manifest's training split is at most this many
# faces: where they were measured to help (README, "Mirrored views"); a larger set learns without
# them and saves the second view's extraction.
FLIP_AUTO_MAX_TRAIN = 5000


@dataclass
class ExtractSettings:
    vision: str = "auto"
    vision_weights: str | None = None
    text: str = "auto"
    face: str = "aligned"  # 'detect' | 'aligned'
    landmarks: str = "auto"  # 'dlib' | 'manifest' | 'canonical' | 'auto' (manifest when every row has them, else dlib)
    image_size: int = 224
    batch_size: int = 32
    device: str = "cpu"
    au_samples: int = 3  # R: R x R samples around each of an AU's two centres
    au_window: float = 1.0  # side of the sampling grid, in rulers (inner-eye-corner distances)
    padding: str = "border"
    caps: dict = field(default_factory=lambda: dict(TEXT_CAPS))
    precision: str = "fp32"  # 'bf16': autocast both backbones (~1.8x faster text on CPUs with AVX512-BF16)
    allow_download: bool = False
    # the map AU regions are pooled from: last | stride16 | stride8; auto = stride16 for a CNN (its
    # last map is 7 x 7 at 224 px), the patch grid for a ViT
    au_map: str = "auto"
    # ('flip',): also store each image's mirrored view (training samples from both); () none; 'auto':
    # flip for training splits of at most FLIP_AUTO_MAX_TRAIN faces (``resolve_augment``)
    augment: tuple | str = "auto"
    # each AU's centres and window (``data.landmarks.AU_REGIONS``): 'table' = DATA.md's, one window for all
    au_regions: str = "table"


class TextCache:
    """Encoded texts by content (bounded LRU), so repeated texts are encoded once. New texts
    are encoded in batches of similar length (less padding).

    The extractor clears it at every block: a text's float values depend (in the last bits) on
    the batch it was encoded in, so a cache carried across blocks would make a resumed run
    differ from an uninterrupted one. Per block, every output is a function of that block's
    rows alone."""

    def __init__(self, encoder, precision: str = "fp32", max_items: int = 8192):
        self.encoder, self.precision, self.max_items, self.items = encoder, precision, max_items, OrderedDict()
        self.hits = self.misses = 0

    def clear(self) -> None:
        self.items.clear()

    def encode(self, texts: list[str], max_length: int):
        missing = sorted(dict.fromkeys(t for t in texts if (t, max_length) not in self.items), key=len)
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        for i in range(0, len(missing), 64):
            chunk = missing[i:i + 64]
            ids, mask, hidden = self.encoder.encode(chunk, max_length, self.precision)
            for j, t in enumerate(chunk):
                self.items[(t, max_length)] = (ids[j], mask[j], hidden[j].astype(np.float16))
                if len(self.items) > self.max_items:
                    self.items.popitem(last=False)
        rows = [self.items[(t, max_length)] for t in texts]
        for t in texts:
            self.items.move_to_end((t, max_length))
        return tuple(np.stack(x) for x in zip(*rows))


def _manifest_digest(manifest: Manifest) -> str:
    h = hashlib.sha256()
    for r in manifest.rows:
        h.update(repr(sorted(r.items())).encode())
    return h.hexdigest()[:16]


def resolve_landmarks(settings: ExtractSettings, manifest: Manifest) -> str:
    if settings.landmarks != "auto":
        return settings.landmarks
    return "manifest" if all("landmarks" in r for r in manifest.rows) else "dlib"


def resolve_augment(augment, manifest: Manifest, out=None, overwrite: bool = False) -> tuple[tuple, str]:
    """(the augmentations to store, why): 'auto' is what a store already at ``out`` holds (it
    resumes as it began), else flip for a training split of at most ``FLIP_AUTO_MAX_TRAIN`` faces."""
    if augment != "auto":
        return ((augment,) if isinstance(augment, str) else tuple(sorted(augment))), "asked"
    if out is not None and not overwrite:
        try:
            return tuple(FeatureStore.open(out).signature.get("augment", [])), "auto: as the store at --out began"
        except ValueError:  # no store there yet
            pass
    n_train = sum(r.get("split") == "train" for r in manifest.rows)
    if n_train <= FLIP_AUTO_MAX_TRAIN:
        return ("flip",), f"auto: {n_train:,} training faces, at most {FLIP_AUTO_MAX_TRAIN:,}"
    return (), f"auto: {n_train:,} training faces, more than {FLIP_AUTO_MAX_TRAIN:,}"


def extract_features(manifest: Manifest, out, settings: ExtractSettings | None = None, overwrite: bool = False,
                     progress=None, log=print) -> dict:
    s = settings or ExtractSettings()
    augment, why = resolve_augment(s.augment, manifest, out, overwrite)
    s = replace(s, augment=augment)
    if s.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected 'fp32' or 'bf16', got {s.precision!r}")
    if s.face not in ("detect", "aligned"):
        raise ValueError(f"face: expected 'detect' or 'aligned', got {s.face!r}")
    refuse_overlap({"--manifest": manifest.path, "images": [manifest.image_path(r) for r in manifest.rows],
                    "--vision-weights": s.vision_weights}, {"--out": out})
    landmark_source = resolve_landmarks(s, manifest)
    if landmark_source not in ("dlib", "manifest", "canonical"):
        raise ValueError(f"landmarks: expected dlib, manifest, canonical or auto, got {s.landmarks!r}")
    if s.face == "detect" and landmark_source != "dlib":
        raise ValueError("--face detect finds landmarks with dlib; use --landmarks dlib (or auto)")
    unknown = set(s.augment) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"augment: expected {', '.join(AUGMENTATIONS)}, got {', '.join(sorted(unknown))}")
    au_regions(s.au_regions)  # a known table, before any work
    vision = load_vision(s.vision, s.vision_weights, s.allow_download, s.device)
    au_map = vision.resolve_au_map(s.au_map)
    text = load_text(s.text, s.allow_download, s.device)
    log(f"vision: {vision.name} ({vision.source}); text: {text.name} ({text.source}); "
        f"augment: {', '.join(augment) or 'none'} ({why})")
    rows = manifest.rows
    n = len(rows)
    types = [t for t in CAPTION_TYPES if any(r.get(CAPTION_COLUMN[t]) for r in rows)]
    has_sentences = any(r.get("au_sentences") for r in rows)
    size = s.image_size
    with torch.no_grad():  # probe the backbone's token and map shapes
        tokens, fmap, layout = vision(torch.zeros(1, 3, size, size, device=s.device), au_map=au_map)
    T, C = tokens.shape[1:]
    C_au = fmap.shape[1] if layout == "BCHW" else fmap.shape[-1]
    RR2 = 2 * s.au_samples ** 2
    signature = {
        "mf2": mf2.__version__, "manifest": {"rows": n, "digest": _manifest_digest(manifest)},
        "vision": {"name": vision.name, "weights": vision.weights_id, "image_size": size},
        "text": {"name": text.name, "weights": text.weights_id, "types": types, "au_sentences": has_sentences,
                 "caps": {k: s.caps[k] for k in [*types, "au_sentences"]}},
        "face": s.face, "landmarks": landmark_source, "au_set": list(AUS), "precision": s.precision,
        "pooling": {"R": s.au_samples, "window_rulers": s.au_window, "padding": s.padding, "tokens_per_au": RR2,
                    "au_map": au_map, "map_size": list(fmap.shape[2:] if layout == "BCHW" else fmap.shape[1:3]),
                    "channels": C_au},
        "augment": sorted(s.augment),
    }
    if s.au_regions != "table":  # (stores without the field were pooled with DATA.md's table)
        signature["pooling"]["regions"] = s.au_regions
    meta = {"meta/ids": [r["id"] for r in rows], "meta/video": [r["video"] for r in rows],
            "meta/split": [r["split"] or "" for r in rows], "meta/image": [r["image"] for r in rows],
            "meta/emotion": np.array([r["emotion"] for r in rows], np.int8),
            "meta/aus": np.array([[r[a] for a in AUS] for r in rows], np.int8)}
    layout_spec = {"meta/face_found": ((), bool), "meta/valid": ((), bool), "meta/error": ((), str),
                   "vision/tokens": ((T, C), np.float16), "vision/au_tokens": ((len(AUS), RR2, C_au), np.float16),
                   "vision/landmarks": ((68, 2), np.float32)}
    if "flip" in s.augment:
        layout_spec.update({"vision/tokens_flip": ((T, C), np.float16),
                            "vision/au_tokens_flip": ((len(AUS), RR2, C_au), np.float16)})
    for t in types:
        L = s.caps[t]
        layout_spec.update({f"text/{t}/ids": ((L,), np.int32), f"text/{t}/mask": ((L,), bool),
                            f"text/{t}/hidden": ((L, text.dim), np.float16)})
    if has_sentences:
        L = s.caps["au_sentences"]
        layout_spec.update({"text/au_sentences/ids": ((len(AUS), L), np.int32),
                            "text/au_sentences/mask": ((len(AUS), L), bool),
                            "text/au_sentences/hidden": ((len(AUS), L, text.dim), np.float16)})
    # a second extract-features into it stops at once; a full disk names the store
    with exclusive(out, "this feature store"), naming(out):
        store = FeatureStore.create_or_resume(out, signature, meta, layout_spec, overwrite)
        start0 = store.count
        if store.complete:
            log(f"{out}: already complete ({n} rows)")
            return dict(store.group.attrs["summary"])
        if start0:
            log(f"{out}: resuming at row {start0} of {n}")
        finder = FaceFinder() if (s.face == "detect" or landmark_source == "dlib") else None
        texts = TextCache(text, s.precision)
        timing = Counter()
        counts = Counter(dict(store.group.attrs.get("partial_counts", {})))
        canon = canonical_landmarks() * size
        t_run = time.perf_counter()
        for start in range(start0, n, s.batch_size):
            block = rows[start:start + s.batch_size]
            b = len(block)
            texts.clear()
            crops = np.zeros((b, size, size, 3), np.uint8)
            lms = np.repeat(canon[None], b, 0).astype(np.float64)
            found, valid, errors = np.zeros(b, bool), np.ones(b, bool), [""] * b
            for i, row in enumerate(block):
                t0 = time.perf_counter()
                try:
                    image = load_image(manifest.image_path(row))
                except ImageError as exc:
                    valid[i], errors[i] = False, str(exc)
                    counts[f"skipped: {str(exc).split(' (')[0]}"] += 1
                    timing["decode"] += time.perf_counter() - t0
                    continue
                t1 = time.perf_counter()
                timing["decode"] += t1 - t0
                crops[i], lms[i], found[i] = _face(image, row, s.face, landmark_source, finder, size, canon, counts)
                timing["face"] += time.perf_counter() - t1
            tokens_np, au_np = visual_features(vision, crops, lms, s.au_samples, s.au_window, s.padding, s.precision,
                                               timing, au_map, s.au_regions)
            tokens_np[~valid], au_np[~valid] = 0, 0  # a skipped image holds no features
            arrays = {"meta/face_found": found, "meta/valid": valid, "meta/error": np.array(errors, dtype=object),
                      "vision/tokens": tokens_np, "vision/au_tokens": au_np, "vision/landmarks": lms.astype(np.float32)}
            if "flip" in s.augment:  # the mirrored face: same labels (the 12 AUs are bilateral)
                flip_tokens, flip_au = visual_features(vision, crops[:, :, ::-1], mirror_landmarks(lms, size), s.au_samples,
                                                       s.au_window, s.padding, s.precision, timing, au_map,
                                                       s.au_regions)
                flip_tokens[~valid], flip_au[~valid] = 0, 0
                arrays.update({"vision/tokens_flip": flip_tokens, "vision/au_tokens_flip": flip_au})
            t2 = time.perf_counter()
            for t in types:
                arrays.update(_encode_texts(texts, [r.get(CAPTION_COLUMN[t]) for r in block], s.caps[t], f"text/{t}"))
            if has_sentences:
                flat = [sent for r in block for sent in (r.get("au_sentences") or [None] * len(AUS))]
                enc = _encode_texts(texts, flat, s.caps["au_sentences"], "text/au_sentences")
                arrays.update({k: v.reshape(b, len(AUS), *v.shape[1:]) for k, v in enc.items()})
            t3 = time.perf_counter()
            timing["text"] += t3 - t2
            store.write_block(start, arrays)
            store.group.attrs["partial_counts"] = dict(counts)
            timing["write"] += time.perf_counter() - t3
            if progress:
                progress(b)
        elapsed = time.perf_counter() - t_run
        done = n - start0
        valid_all = store["meta/valid"][:]
        summary = {
            "rows": n, "extracted_this_run": done, "resumed_from": start0,
            "faces_not_found": int((~store["meta/face_found"][:] & valid_all).sum()),
            "skipped": {k.split(": ", 1)[1]: v for k, v in counts.items() if k.startswith("skipped: ")},
            "landmarks": {k.split(": ", 1)[1]: v for k, v in counts.items() if k.startswith("landmarks: ")},
            "seconds": round(elapsed, 3), "images_per_second": round(done / elapsed, 2) if elapsed else None,
            "stage_seconds": {k: round(timing[k], 3) for k in STAGES},
            "text_cache": {"encoded": texts.misses, "reused": texts.hits},
            "settings": {**asdict(s), "landmarks": landmark_source},
            "backbones": {"vision": f"{vision.name} ({vision.source})", "text": f"{text.name} ({text.source})"},
        }
        store.finish(summary)
        return summary


def visual_features(vision, crops: np.ndarray, landmarks: np.ndarray, au_samples: int, au_window: float,
                    padding: str, precision: str = "fp32", timing: Counter | None = None, au_map: str = "last",
                    regions: str = "table"):
    """The image side of a cache row, in memory (extraction and ``mf2 predict`` share it): face
    crops [b, S, S, 3] uint8 and their landmarks [b, 68, 2] (crop pixels) -> global tokens
    [b, T, C] and AU tokens [b, 12, 2R², C_au] pooled from the ``au_map`` map at the centres and
    windows of the region table ``regions``, float16 as stored."""
    b, size = crops.shape[0], crops.shape[1]
    t0 = time.perf_counter()
    device = next(vision.model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255)
    tokens, fmap, layout = vision(x, precision, au_map)
    t1 = time.perf_counter()
    centres = au_centres(landmarks, regions).reshape(b, 2 * len(AUS), 2) / size  # normalised, AU-major
    window = au_window * ruler(landmarks)[:, None] * np.repeat(au_window_factors(regions), 2)[None] / size  # [b, 24]
    pooled = au_region_pool(fmap, torch.as_tensor(centres, dtype=fmap.dtype, device=fmap.device),
                            torch.as_tensor(window, dtype=fmap.dtype, device=fmap.device), au_samples, padding,
                            layout=layout)
    au_tokens = pooled.reshape(b, len(AUS), 2 * au_samples ** 2, pooled.shape[-1])
    tokens_np, au_np = tokens.cpu().numpy().astype(np.float16), au_tokens.cpu().numpy().astype(np.float16)
    if timing is not None:
        timing["vision"] += t1 - t0
        timing["pooling"] += time.perf_counter() - t1
    return tokens_np, au_np


def _face(image, row, face_mode, landmark_source, finder, size, canon, counts):
    """(crop, landmarks in the crop, face found) for one decoded image."""
    if face_mode == "detect":
        faces = finder.detect(image)
        if faces:
            crop, lm, _ = align(image, faces[0].landmarks, size)
            return crop, lm, True
        counts["landmarks: canonical (no face found)"] += 1
        crop, _ = resize_square(image, size)
        return crop, canon, False
    crop, m = resize_square(image, size)
    if landmark_source == "manifest":
        if "landmarks" in row:
            counts["landmarks: manifest"] += 1
            return crop, apply(m, np.asarray(row["landmarks"], dtype=np.float64)), True
        counts["landmarks: canonical (none in manifest)"] += 1
        return crop, canon, True
    if landmark_source == "dlib":
        counts["landmarks: dlib"] += 1
        return crop, finder.landmarks(crop, (0, 0, size - 1, size - 1)), True
    counts["landmarks: canonical"] += 1
    return crop, canon, True


def _encode_texts(cache: TextCache, texts: list, max_length: int, prefix: str) -> dict:
    """ids/mask/hidden for a list of texts; None (no caption) gives an all-zero row."""
    n = len(texts)
    present = [i for i, t in enumerate(texts) if t]
    ids = np.zeros((n, max_length), np.int32)
    mask = np.zeros((n, max_length), bool)
    hidden = None
    if present:
        i_ids, i_mask, i_hidden = cache.encode([texts[i] for i in present], max_length)
        hidden = np.zeros((n, max_length, i_hidden.shape[-1]), np.float16)
        ids[present], mask[present], hidden[present] = i_ids, i_mask, i_hidden
    else:
        hidden = np.zeros((n, max_length, cache.encoder.dim), np.float16)
    return {f"{prefix}/ids": ids, f"{prefix}/mask": mask, f"{prefix}/hidden": hidden}
