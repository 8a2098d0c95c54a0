"""Videos of several people (issue 22): one identity per person across frames (the tracker, and
on generated clips through ``benchmarks/tracking.py``'s tiny mode), the face detectors and their
near-misses, head pose against SynthFACS's known angles, OpenFace 2.x output read by an
OpenFace analysis script, py-feat-style calls, and the results' attrs surviving a CSV round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import mf2
from mf2.features.face_align import FaceFinder
from mf2.features.mtcnn import MTCNN, nms
from mf2.prediction.tracking import Tracker, TrackSettings, descriptor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import tracking as bench  # noqa: E402


# -- the tracker, on its own -------------------------------------------------------------------------

def _face(x, y, side=80):
    lm = np.stack([np.linspace(x, x + side, 68), np.linspace(y, y + side, 68)], 1)
    return SimpleNamespace(box=(x, y, x + side, y + side), landmarks=lm)


def test_identity_survives_crossing_a_gap_and_a_return():
    """Two people cross (their boxes overlap: appearance decides), one leaves for 3 s and comes
    back elsewhere, a third appears: 3 ids, none swapped. The descriptor stands in for dlib's."""
    codes = {p: np.eye(4)[p] for p in range(4)}
    who: dict[tuple, int] = {}

    def describe(image, box, landmarks):
        return codes[who[tuple(box)]]

    tracker = Tracker(TrackSettings(), describe)
    truth, got = [], []
    for k in range(60):
        t = k / 10
        people = {0: _face(20 + 10 * k, 100), 1: _face(620 - 10 * k, 110)}  # crossing at k = 30
        if not 20 <= k < 50:
            people[2] = _face(300 if k < 20 else 500, 300)  # away for 3 s, back elsewhere
        if k >= 55:
            people[3] = _face(40, 300)
        faces = []
        for p, f in people.items():
            who[tuple(f.box)] = p
            faces.append(f)
        truth += list(people)
        got += tracker.update(np.zeros((8, 8, 3), np.uint8), faces, t)
    mapping = {}
    for p, g in zip(truth, got):
        mapping.setdefault(p, set()).add(g)
    assert all(len(ids) == 1 for ids in mapping.values()), mapping
    assert len({min(ids) for ids in mapping.values()}) == 4
    assert tracker.descriptors_computed < len(truth) / 4  # descriptors at events, not every face


def _crossing(last_code, settings=None):
    """Two people (codes a, b) moving towards each other, 80 px, 10 frames; then one face where
    both are predicted (their boxes coincide) with descriptor ``last_code``: its track id."""
    a, b = np.eye(4)[0], np.eye(4)[1]
    codes = {}
    tracker = Tracker(settings or TrackSettings(), lambda image, box, lm: codes[tuple(box)])
    image = np.zeros((8, 8, 3), np.uint8)
    for k in range(10):
        fa, fb = _face(100 + 10 * k, 100), _face(300 - 10 * k, 100)
        codes[tuple(fa.box)], codes[tuple(fb.box)] = a, b
        assert tracker.update(image, [fa, fb], k / 10) == [0, 1]
    f = _face(200, 100)
    codes[tuple(f.box)] = last_code
    return tracker.update(image, [f], 1.0)[0]


def test_appearance_weighs_in_where_motion_is_in_doubt_but_refuses_no_one():
    """Where motion cannot tell two people apart, a face like one of them joins that one; a
    face like neither (distance > max_distance from both, as a half-hidden, turned or newly
    expressive face can be) gets one of their ids instead of starting a new track; only a face
    farther than ``stranger`` from both (someone never seen) starts one."""
    assert _crossing(np.eye(4)[1]) == 1
    assert _crossing(np.eye(4)[0]) == 0
    between = np.array([0.5, 0.5, np.sqrt(0.72 ** 2 - 0.5), 0.0])  # 0.72 from both
    loose = TrackSettings(stranger=0.8)
    assert loose.max_distance < 0.72 < loose.stranger
    assert _crossing(between, loose) in (0, 1)  # far from both, no stranger: an existing id, not a new one
    assert _crossing(between) == 2  # beyond the default stranger (0.65): someone new
    assert _crossing(np.eye(4)[2]) == 2  # 1.41 from both: a stranger


def _person(x, y, bend, side=80):
    """A face whose landmarks have a shape of its own (``bend``: how much its line curves)."""
    u = np.linspace(0, 1, 68)
    lm = np.stack([x + side * u, y + side * (u + bend * np.sin(np.pi * u))], 1)
    return SimpleNamespace(box=(x, y, x + side, y + side), landmarks=lm)


def _run(frames):
    """Track ids of ``frames``: [(t, [(face, code), ...]), ...]; a face's descriptor is its code."""
    codes = {}
    tracker = Tracker(TrackSettings(), lambda image, box, lm: codes[lm.tobytes()])
    image = np.zeros((8, 8, 3), np.uint8)
    got = []
    for t, people in frames:
        for f, code in people:
            codes[np.asarray(f.landmarks, float).tobytes()] = code
        got.append(tracker.update(image, [f for f, _ in people], t))
    return got


def test_motion_is_checked_against_appearance_where_it_is_weak_evidence():
    """Motion alone gave one person's id to another where position was all that decided (the
    hostile probe): two people swapping seats at a cut, a stranger taking someone's place, two
    people swapping places between frames sampled at 2 fps. Where motion is weak evidence (the
    landmarks' shape jumped, the track was last seen > ``verify_after`` s ago, or it is due a
    descriptor) a face far from its track's gallery goes to the track it looks like, or starts a
    new one if it looks like no one; a face only a little far (turned) keeps its id."""
    a, b, c = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]
    # a cut at frame 10: the same two seats, the people swapped (their landmarks' shapes differ)
    frames = [(k / 10, [(_person(100, 100, 0.0), a), (_person(300, 100, 0.3), b)]) for k in range(10)]
    frames += [(k / 10, [(_person(100, 100, 0.3), b), (_person(300, 100, 0.0), a)]) for k in range(10, 14)]
    assert _run(frames) == [[0, 1]] * 10 + [[1, 0]] * 4
    # a stranger in the same seat, the same shape (nothing but appearance differs), seen when the
    # track is due a descriptor: a new id from then on (at most ``refresh`` s late)
    frames = [(k / 10, [(_person(100, 100, 0.0), a if k < 10 else c)]) for k in range(30)]
    got = [ids[0] for ids in _run(frames)]
    assert got[:10] == [0] * 10 and got[-5:] == [1] * 5 and got.index(1) <= 20
    # the same with a stranger as near as two real people are (the astronaut and Grace Hopper:
    # 0.66-0.70), alone in the frame (no other track to be nearer)
    near_stranger = a + (c - a) * 0.67 / np.linalg.norm(c - a)
    frames = [(k / 10, [(_person(100, 100, 0.0), a if k < 10 else near_stranger)]) for k in range(30)]
    got = [ids[0] for ids in _run(frames)]
    assert got[:10] == [0] * 10 and got[-5:] == [1] * 5
    # 2 fps: each person moved into the other's place between two frames (same shapes)
    frames = [(k / 2, [(_person(100, 100, 0.0), a), (_person(300, 100, 0.0), b)]) for k in range(3)]
    frames += [(1.5, [(_person(110, 100, 0.0), b), (_person(290, 100, 0.0), a)])]
    assert _run(frames)[-1] == [1, 0]
    # a turned face (0.6 from its gallery, beyond max_distance but no stranger, near no one else)
    # at 2 fps keeps its id
    turned = a + (c - a) * 0.6 / np.linalg.norm(c - a)
    frames = [(k / 2, [(_person(100, 100, 0.0), a)]) for k in range(3)] + [(1.5, [(_person(105, 100, 0.0), turned)])]
    assert _run(frames)[-1] == [0]


def test_a_new_track_that_turns_out_to_be_someone_back_is_merged():
    """Someone back after 2 s who does not look like themselves at first (half visible) starts
    a new track; once they do, within ``confirm`` s, they go on under their old id (the frames
    before keep the new one) and the new track is retired: never looked for, never re-used.
    With ``confirm=0`` the new id stays."""
    a, half = np.eye(4)[0], np.eye(4)[2]

    def run(settings):
        codes = {}
        tracker = Tracker(settings, lambda image, box, lm: codes[tuple(box)])
        image = np.zeros((8, 8, 3), np.uint8)
        got = []
        for k in list(range(6)) + list(range(26, 40)):
            f = _face(100 if k < 6 else 400 + 2 * k, 100)
            codes[tuple(f.box)] = a if k < 6 or k >= 31 else half
            got += tracker.update(image, [f], k / 10)
        return tracker, got

    tracker, got = run(TrackSettings())
    assert got == [0] * 6 + [1] * 5 + [0] * 9
    assert tracker.tracks[1].retired and not tracker.tracks[0].retired
    assert all(k != 1 for k, _ in tracker.searched(4.0))
    assert tracker.recover([_face(480, 100)], 4.0, 0.0, tracks=[1]) == [None]
    _, got = run(TrackSettings(confirm=0.0))
    assert got == [0] * 6 + [1] * 14


def test_frames_with_one_timestamp_continue_their_tracks():
    """Two frames at one time (a VFR clip's repeated timestamp, frames timed by a rounded clock)
    started a new track for each face: the tracks of the frame before are not 'this frame'. No
    velocity is measured over no time; a time that goes back is refused."""
    tracker = Tracker(TrackSettings(), lambda *a: np.zeros(4))
    image = np.zeros((8, 8, 3), np.uint8)
    got = []
    for t, x in ((0.0, 100), (0.1, 110), (0.1, 111), (0.1, 112), (0.2, 122)):
        got += tracker.update(image, [_face(x, 100), _face(x + 300, 100)], t)
    assert got == [0, 1] * 5 and len(tracker.tracks) == 2
    assert [d[0] for d in tracker.tracks[0].detected] == [0.1, 0.2]  # the repeats replaced, not a pair over 0 s
    assert tracker.recover([_face(123, 100)], 0.2, 0.3) == [None]  # both seen in this frame
    with pytest.raises(ValueError, match="time 0.1 is before the last frame's"):
        tracker.update(image, [_face(120, 100)], 0.1)
    from mf2.detector import _Tracks  # a damaged stream's times going back: tracked as at the time before

    tracks, seen = _Tracks(TrackSettings()), []
    for k, t in enumerate((0.0, 0.1, 0.05, 0.2)):
        faces = [_face(100 + k, 100)]
        tracks(SimpleNamespace(source="v", frame=k, time=t, image=None, near_misses=[]), faces)
        seen.append(faces[0].track)
    assert seen == [0, 0, 0, 0]


def test_tracking_settings_are_checked():
    with pytest.raises(ValueError, match="max_gap"):
        TrackSettings(max_gap=-1)
    with pytest.raises(ValueError, match="min_iou"):
        TrackSettings(min_iou=2)
    with pytest.raises(ValueError, match="occlusion"):
        TrackSettings(occlusion=float("nan"))
    with pytest.raises(ValueError, match="search"):
        TrackSettings(search="yes")
    with pytest.raises(ValueError, match="confirm"):
        TrackSettings(confirm=-1)
    from mf2.detector import _tracking  # Detector(tracking=dict(...)) names what it does not know

    with pytest.raises(ValueError, match="unknown setting 'bogus'; known: .*max_gap"):
        _tracking(dict(bogus=1, max_gap=2))
    assert _tracking(dict(max_gap=2)).max_gap == 2
    # on assignment too: a setting changed after construction is checked as at construction
    s = TrackSettings()
    with pytest.raises(ValueError, match="max_gap"):
        s.max_gap = -5
    with pytest.raises(ValueError, match="gallery"):
        s.gallery = 1.5
    with pytest.raises(AttributeError, match="unknown setting 'bogus'"):
        s.bogus = 1
    s.max_gap = 3
    assert s.max_gap == 3.0 and s == TrackSettings(max_gap=3)
    # a Detector's other arguments as well: a path that is not one is one line, not a TypeError
    from mf2.detector import Detector

    with pytest.raises(ValueError, match="vision_weights: expected a file path or None, got 3"):
        Detector(None, vision_weights=3)


def test_where_a_missed_person_is_looked_for():
    """A track the detection missed is searched for around its prediction for max_gap seconds
    after the detector last found it, or longer while someone's head covers it, and never on
    what searches alone found; what a search finds continues it unless it is a face of the
    frame found again; velocity comes from detections only."""
    tracker = Tracker(TrackSettings(max_gap=1.0, occlusion=5.0), lambda *a: np.zeros(4))
    image = np.zeros((8, 8, 3), np.uint8)
    for k in range(3):  # a person moving right at 100 px/s, then missed
        [a] = tracker.update(image, [_face(100 + 10 * k, 100)], k / 10)
    assert tracker.searched(0.2) == []  # seen in this frame: nothing to look for
    [(tid, pred)] = tracker.searched(0.5)
    assert tid == a and np.allclose(pred, (150, 100, 230, 180))  # moved on at 100 px/s, same size
    assert tracker.searched(1.3) == []  # over max_gap, nobody in front
    front = [(130, 90, 210, 170)]  # a head over the predicted box: hidden, looked for up to 5 s
    assert [k for k, _ in tracker.searched(1.3, front)] == [a]
    assert tracker.searched(5.3, front) == []
    # a search that finds the frame's own face again does not continue the track; a face beside does
    again, beside = _face(150, 100), _face(152, 104, 70)
    assert tracker.recover([again], 0.5, 0.3, taken=[again.box], tracks=[a]) == [None]
    assert tracker.recover([beside, beside], 0.5, 0.3, taken=[], tracks=[a]) == [a, None]  # once
    # a box found by searching (it may sit half on someone in front) does not set the velocity
    tracker.recover([_face(300, 100)], 0.6, 0.0, tracks=[a])
    assert np.allclose(tracker.tracks[a].predicted(0.7, 1.0), (310, 100, 390, 180))
    assert [k for k, _ in tracker.searched(1.15)] == [a]  # found at 0.2 s by the detector, not later
    assert tracker.searched(1.25) == []


@pytest.fixture(scope="module")
def people():
    return bench.real_people()


def test_dlib_descriptors_tell_the_three_real_people_apart(people):
    """The re-identification threshold (0.55) between one person's two looks and two people."""
    def desc(sprite, scale=1.0, flip=False):
        im = Image.fromarray(sprite.rgba[..., :3])
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.resize((int(im.width * scale), int(im.height * scale)))
        rgb = np.ascontiguousarray(np.asarray(im))
        f = FaceFinder("mtcnn").detect(rgb, None)[0]
        return descriptor(rgb, f.box, f.landmarks)

    base = [desc(p[0]) for p in people]
    again = [desc(p[0], 0.6, flip=True) for p in people]
    limit = TrackSettings().max_distance
    for i in range(3):
        assert np.linalg.norm(base[i] - again[i]) < limit
        for j in range(3):
            if i != j:
                assert np.linalg.norm(base[i] - base[j]) > limit



def test_descriptors_equal_dlibs_own_and_the_model_file_is_checked(people, tmp_path):
    """dlib's descriptor network, run by PyTorch from dlib's own file, gives dlib's numbers: on a
    SynthFACS face, its mirror, a grey copy, a real face and a face cut by the image's border,
    alone and as a batch; a file that is not that network (truncated, another dlib network, noise)
    is a one-line ValueError when it is read."""
    import dlib
    import face_recognition_models

    from mf2.prediction import face_descriptor as fd

    model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    finder = FaceFinder("mtcnn")
    rgb = np.ascontiguousarray(people[0][0].rgba[..., :3])
    grey = np.ascontiguousarray(np.repeat(rgb.mean(2, keepdims=True).astype(np.uint8), 3, 2))
    photo = bench.group_photo()
    images = [rgb, np.ascontiguousarray(rgb[:, ::-1]), grey, photo]
    border = np.ascontiguousarray(rgb[:, rgb.shape[1] // 3:])  # the face's left part cut off
    chips, own = [], []
    for image in [*images, border]:
        found = finder.detect(image, None)
        assert found, "a face to describe"
        for f in found[:3]:
            rect = dlib.rectangle(*[int(round(v)) for v in f.box])
            shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in f.landmarks])
            own.append(np.asarray(model.compute_face_descriptor(image, shape, 0), np.float64))
            got = descriptor(image, f.box, f.landmarks)
            assert got.dtype == np.float64 and got.shape == (128,)
            assert np.abs(got - own[-1]).max() < 1e-5
            chips.append(fd.chip(image, f.box, f.landmarks))
    own = np.array(own)
    assert np.abs(fd.describe_chips(np.array(chips)) - own).max() < 1e-5  # a batch as one by one
    frozen = np.array(chips)
    frozen.flags.writeable = False  # a read-only view (a decoded frame's): copied, not handed to torch as is
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.abs(fd.describe_chips(frozen) - own).max() < 1e-5
    # distances, which the tracker compares with its thresholds, as dlib's
    dist = lambda d: np.linalg.norm(d[:, None] - d[None], axis=2)  # noqa: E731
    assert np.abs(dist(fd.describe_chips(np.array(chips))) - dist(own)).max() < 1e-5
    with pytest.raises(ValueError, match="face chip"):
        fd.describe_chip(np.zeros((10, 10, 3), np.uint8))
    data = open(face_recognition_models.face_recognition_model_location(), "rb").read()
    (tmp_path / "cut.dat").write_bytes(data[:len(data) // 2])
    (tmp_path / "tail.dat").write_bytes(data[:-10])  # cut in its last layer's trailing fields: it still parses
    (tmp_path / "noise.dat").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path in (tmp_path / "cut.dat", tmp_path / "tail.dat", tmp_path, tmp_path / "noise.dat", face_recognition_models.cnn_face_detector_model_location(),
                 face_recognition_models.pose_predictor_model_location()):
        with pytest.raises(ValueError, match="not dlib's face recognition ResNet") as e:
            fd.load_net(path)
        assert "\n" not in str(e.value)


# -- detectors ---------------------------------------------------------------------------------------

def test_nms_matches_a_plain_greedy_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (60, 2))
    boxes = torch.tensor(np.c_[xy, xy + rng.uniform(10, 40, (60, 2))])
    scores = torch.tensor(rng.uniform(0, 1, 60))
    groups = torch.tensor(rng.integers(0, 2, 60))
    keep = nms(boxes, scores, 0.4, groups=groups).tolist()
    order, ref = np.argsort(-scores.numpy()), []
    b = boxes.numpy()
    for i in order:
        ok = True
        for j in ref:
            if groups[i] != groups[j]:
                continue
            iw = max(0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]) + 1)
            ih = max(0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]) + 1)
            area = lambda k: (b[k, 2] - b[k, 0] + 1) * (b[k, 3] - b[k, 1] + 1)  # noqa: E731
            if iw * ih / (area(i) + area(j) - iw * ih) > 0.4:
                ok = False
        if ok:
            ref.append(int(i))
    assert keep == ref


def test_mtcnn_batches_equal_single_images_and_find_the_group(people):
    photo = bench.group_photo()
    small = np.ascontiguousarray(photo[::2, ::2])
    det = MTCNN("cpu")
    one, other = det.detect([photo])[0], det.detect([small])[0]
    both = det.detect([photo, small, photo])
    for a, b in ((one, both[0]), (other, both[1]), (one, both[2])):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    found = {name: FaceFinder(name).find([photo])[0] for name in ("hog", "mtcnn")}
    assert len(found["mtcnn"].faces) == 6  # the cameraman at three-quarter view too
    assert len(found["hog"].faces) < 6
    strict = FaceFinder("hog").find([photo], min_score=1.4)[0]  # faces under 1.4 are near-misses, not lost
    assert len(strict.near_misses) >= 1 and len(strict.faces) + len(strict.near_misses) >= len(found["hog"].faces)
    assert all(f.score < 1.4 for f in strict.near_misses)


# -- head pose -----------------------------------------------------------------------------------------

def test_head_pose_against_synthfacs_within_30_degrees():
    """The fit from the renderer's own landmarks, and end to end through MTCNN and dlib's landmarks
    as the benchmark measures it: on faces drawn with their relief (a nose dlib finds) yaw and roll
    are read within 5 degrees, pitch still short of the truth; the flat drawing reads yaw and pitch
    worse (roll, which needs no nose, about as well). Why pitch falls short: the fit follows the
    renderer's pitch all the way (gain 1), dlib's landmarks only about two thirds of it (a limit of
    the landmarks, not of the fit: see mf2/prediction/pose.py)."""
    e = bench.pose_errors(40)
    assert e["found"] >= 32 and e["flat_found"] >= 32  # MTCNN misses a few cartoon faces at these poses
    assert e["exact_yaw"] <= 2.5 and e["exact_pitch"] <= 5.0 and e["exact_roll"] <= 0.5, e
    assert e["detected_yaw"] <= 5.0 and e["detected_pitch"] <= 8.5 and e["detected_roll"] <= 2.0, e
    assert 0.9 <= e["exact_pitch_gain"] <= 1.1 and e["detected_pitch_gain"] < 0.85, e
    assert e["flat_yaw"] > e["detected_yaw"] + 1.5 and e["flat_pitch"] > e["detected_pitch"], e


def test_the_pose_benchmark_writes_both_seeds(tmp_path):
    """``benchmarks/tracking.py --pose-only --tiny``: pose-cpu-tiny.{json,md} with seeds 11 and 12,
    each with the exact, relief and flat figures (the full run's are in benchmarks/results/)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/tracking.py"), "--pose-only", "--tiny", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    poses = json.loads((tmp_path / "pose-cpu-tiny.json").read_text())["pose"]
    assert [p["seed"] for p in poses] == [11, 12] and all(p["renders"] == 8 for p in poses)
    for p in poses:
        assert p["found"] >= 6 and all(np.isfinite(v) for v in p.values()), p
        assert p["detected_yaw"] < p["flat_yaw"], p  # 8 renders: only the clearest gap is asserted here
    md = (tmp_path / "pose-cpu-tiny.md").read_text()
    assert md.count("faces with relief") == 2 and md.count("faces drawn flat") == 2


def test_dlib_finds_the_shaded_nose_but_not_the_line_nose(monkeypatch):
    """Why the flat drawing reads as frontal: move the drawn nose of frontal faces sideways and
    dlib's nose points barely follow the line nose (they are placed from the eyes and mouth), but
    follow most of the way with the shaded nose (``Identity.relief``)."""
    import dataclasses
    import sys as _sys

    from mf2.data import synthfacs as sf

    render_module = _sys.modules["mf2.data.synthfacs.render"]
    face_landmarks = render_module.face_landmarks
    moved = lambda ident, au: face_landmarks(ident, au) + np.where(np.isin(np.arange(68), np.r_[27:36]), 0.08, 0)[:, None] * [1, 0]  # noqa: E731
    finder = FaceFinder("mtcnn")
    follows = {}
    for relief in (0.0, 1.0):
        ratios = []
        for spec in sf.sample_specs(6, 5):
            spec.pose = dataclasses.replace(spec.pose, yaw=0.0, roll=0.0)
            spec.identity = dataclasses.replace(spec.identity, relief=relief)
            found = []
            for draw in (face_landmarks, moved):
                monkeypatch.setattr(render_module, "face_landmarks", draw)
                image, lm = sf.render_spec(spec, 224)
                found.append((finder.detect(image, None)[0].landmarks, lm))
            (a, lm_a), (b, lm_b) = found
            ratios.append((b - a)[27:36, 0].mean() / (lm_b - lm_a)[27:36, 0].mean())
        follows[relief] = float(np.mean(ratios))
    assert follows[0.0] < 0.3 and follows[1.0] > 0.5, follows


def test_a_tilted_real_face_gets_the_landmarks_of_the_upright_one():
    """dlib's model pulls a tilted face's points towards upright; FaceFinder takes the points of a
    face tilted past UPRIGHT_ABOVE from an upright copy, so the astronaut turned by +-30 degrees gets
    her upright landmarks turned (within 2% of the outer eye distance) and the same yaw and pitch."""
    import math

    from mf2.prediction.pose import head_pose
    from skimage.data import astronaut

    photo = np.ascontiguousarray(astronaut())
    finder = FaceFinder("hog")
    upright = finder.detect(photo, None)[0].landmarks
    centre = upright.mean(0)
    eyes = float(np.linalg.norm(upright[45] - upright[36]))
    pose = np.array(head_pose(upright))
    for degrees in (-30, 30):
        turned = np.ascontiguousarray(np.asarray(Image.fromarray(photo).rotate(degrees, Image.Resampling.BILINEAR,
                                                                               center=tuple(centre))))
        a = math.radians(-degrees)  # PIL turns anticlockwise; in image coordinates (y down) that is -degrees
        truth = (upright - centre) @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) + centre
        got = finder.detect(turned, None)[0].landmarks
        assert np.linalg.norm(got - truth, axis=1).mean() < 0.02 * eyes, degrees
        yaw, pitch, roll = head_pose(got)
        assert abs(yaw - pose[0]) < 2.5 and abs(pitch - pose[1]) < 2.5 and abs(roll - pose[2] + degrees) < 2, (degrees, yaw, pitch, roll)


def test_head_pose_mirrors_with_a_real_photo():
    """A mirrored photo turns the other way: yaw and roll change sign, pitch stays; the astronaut
    faces the camera within a few degrees."""
    from mf2.prediction.pose import head_pose

    from skimage.data import astronaut

    finder = FaceFinder("hog")
    a = np.ascontiguousarray(astronaut())
    left = head_pose(finder.detect(a, None)[0].landmarks)
    right = head_pose(finder.detect(np.ascontiguousarray(a[:, ::-1]), None)[0].landmarks)
    assert abs(left[0] + right[0]) < 4 and abs(left[2] + right[2]) < 2 and abs(left[1] - right[1]) < 4
    assert abs(left[0]) < 10 and abs(left[1]) < 15 and abs(left[2]) < 10, left


# -- the benchmark, interop and the API on a generated clip ------------------------------------------------

@pytest.fixture(scope="module")
def benchmark_run(pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracking")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/tracking.py"), "--tiny", "--checkpoint",
                           str(pretrained / "run"), "--out", str(out), "--work", str(out / "work")],
                          capture_output=True, text=True, timeout=900, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_benchmark_keeps_a_face_in_front_of_a_hidden_one():
    """A detection of a visible face is not dropped for the hidden ("don't care") face behind
    it; a detection on the hidden face alone is."""
    dets = np.array([[100, 100, 200, 200], [400, 100, 480, 180]], float)
    shown, hidden = [(102, 98, 198, 202)], [(120, 110, 210, 200), (395, 95, 485, 185)]
    kept, tracks = bench._drop_dont_care(dets, np.array([0, 1]), shown, hidden, 0.3)
    assert kept.tolist() == [dets[0].tolist()] and tracks.tolist() == [0]


def test_tracking_benchmark_tiny_mode(benchmark_run):
    result = json.loads((benchmark_run / "tracking-cpu-tiny.json").read_text())
    tracked = [r for r in result["rows"] if r["tracking"]]
    assert tracked and tracked[0]["truth_faces"] > 20
    assert tracked[0]["recall_40px"] >= 0.9 and tracked[0]["idf1"] >= 0.9
    assert {g["detector"] for g in result["group_photo"]} == {"hog", "mtcnn"}
    published, finer, confirmed = result["cascades"]
    assert published["cascade"] == "published (mf2's default)" and confirmed["cascade"].startswith("finer, confirmed")
    assert finer["recall_40px"] >= published["recall_40px"] and published["astronaut_video_extra_faces"] == 0
    assert confirmed["astronaut_video_extra_faces"] == 0 and confirmed["false_positives"] == 0
    speed = result["descriptor"]  # the PyTorch run of dlib's network: dlib's numbers
    assert speed["faces"] >= 6 and speed["max_abs_difference"] < 1e-5 and speed["max_distance_difference"] < 1e-5
    assert speed["dlib_ms_per_face"] > 0 and speed["mf2_torch_ms_per_face"] > 0
    assert (benchmark_run / "tracking-cpu-tiny.md").read_text().startswith("# Faces and identities")


def test_openface_output_is_read_by_an_openface_script(pretrained, benchmark_run, tmp_path):
    from click.testing import CliRunner

    from mf2.cli.main import main

    clip = next((benchmark_run / "work").glob("tiny-*.mp4"))
    out = tmp_path / "clip.csv"
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(pretrained / "run"), str(clip), "--fps", "0",
                                       "--format", "openface", "--out", str(out)])
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0]
    assert header.startswith("frame, face_id, timestamp, confidence, success, pose_Rx")
    proc = subprocess.run([sys.executable, str(ROOT / "tests/openface_analysis.py"), str(out)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "good face-frames" in lines[0] and sum(line.startswith("  face ") for line in lines) == 2
    table = pd.read_csv(out, skipinitialspace=True)
    assert table["frame"].min() == 1 and set(table["success"]) <= {0, 1}
    assert table.loc[table.success == 1, "confidence"].between(0, 1).all()
    # a folder of OpenFace files for several sources; a file for one only
    both = tmp_path / "openface"
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(pretrained / "run"), str(clip),
                                       str(benchmark_run / "work"), "--fps", "0", "--format", "openface", "--out",
                                       str(both)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in both.glob("*.csv")) == [clip.stem + ".csv"]


@pytest.fixture(scope="module")
def detector(pretrained):
    with mf2.Detector.from_run(pretrained / "run", device="cpu") as det:
        yield det


def test_tracks_timelines_smoothing_and_py_feat_calls(detector, benchmark_run, tmp_path):
    clip = next((benchmark_run / "work").glob("tiny-*.mp4"))
    faces = detector.detect_video(clip)  # every frame, as py-feat's detect_video
    assert faces["frame"].nunique() == faces.attrs["counts"]["frames"] == 18
    tracks = faces.tracks()
    assert len(tracks) == 2 and tracks["frames"].sum() == (faces.status == "ok").sum()
    assert faces.summary(by="track").equals(tracks)
    fig = faces.plot_timeline(track=int(tracks.index[0][1]), path=tmp_path / "t.png")
    assert Image.open(tmp_path / "t.png").size == (1000, 600) and fig.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="no track 9"):
        faces.plot_timeline(track=9)
    smooth = faces.smooth(0.5)
    ok = (faces.status == "ok").to_numpy()
    jitter = lambda t: np.abs(np.diff(t[ok & (t.track == 0).fillna(False).to_numpy()]["AU12"].to_numpy())).mean()  # noqa: E731
    assert jitter(smooth) <= jitter(faces) and smooth.attrs["smooth"] == 0.5
    np.testing.assert_allclose(smooth[ok].emotions.sum(axis=1), 1, atol=1e-5)
    assert detector.detect(clip, fps=0, smooth=0.5, progress=False).equals(smooth)
    assert list(faces.facebox.columns) == ["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore"]
    assert list(faces.poses.columns) == ["yaw", "pitch", "roll"]
    info = faces.info
    assert info["face_detector"] == "mtcnn" and len(info["threshold"]) == 12 and info["versions"]["mf2"]
    with pytest.raises(ValueError, match="is a video"):
        detector.detect_image(clip)
    with pytest.raises(ValueError, match="data_type"):
        detector.detect(clip, data_type="tensor")
    # detect_frames: the old rate name is refused, the new one times every frame given
    import av

    with av.open(str(clip)) as video:
        frames = list(video.decode(video=0))
    with pytest.raises(TypeError, match="frame_rate"):
        next(detector.detect_frames(frames, fps=5))
    parts = mf2.Faces.concat(detector.detect_frames(frames, frame_rate=12))
    assert parts["time"].max() == pytest.approx(17 / 12, abs=1e-3)  # 1.42 s for an 1.5 s clip, not 3.4
    assert parts.drop(columns="source")["track"].tolist() == faces["track"].tolist()


def test_csv_round_trip_keeps_thresholds_and_refuses_an_edited_table(detector, tmp_path):
    from skimage.data import astronaut

    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    faces = detector.detect(tmp_path / "a.png", progress=False)
    faces.attrs["threshold"] = [0.01] * 12  # as if tuned: every AU active
    faces.to_csv(tmp_path / "f.csv")
    back = mf2.read_faces(tmp_path / "f.csv")
    assert back.equals(faces) and back.attrs["threshold"] == [0.01] * 12
    assert back.active_aus().equals(faces.active_aus()) and back.active_aus().all().all()
    assert back.info["face_detector"] == faces.info["face_detector"]
    (tmp_path / "f.csv").write_text((tmp_path / "f.csv").read_text().replace("ok", "ok", 1) + "\n")
    with pytest.raises(ValueError, match="changed since it was written"):
        mf2.read_faces(tmp_path / "f.csv")
    (tmp_path / "f.csv.json").unlink()
    assert not mf2.read_faces(tmp_path / "f.csv").active_aus().all().all()  # 0.5 without its attrs


def test_the_library_never_writes_over_its_inputs(detector, tmp_path):
    """Detector.detect(annotate=) into the input's folder and Faces.to_csv onto a source are
    refused as the CLI refuses them: the photo is left as it was."""
    from skimage.data import astronaut

    photo = tmp_path / "in" / "a.png"
    photo.parent.mkdir()
    Image.fromarray(astronaut()).save(photo)
    before = photo.read_bytes()
    with pytest.raises(ValueError, match="mf2 never writes (over|into) its inputs"):
        detector.detect(photo, annotate=tmp_path / "in", progress=False)
    with pytest.raises(ValueError, match="mf2 never writes (over|into) its inputs"):
        detector.detect([str(tmp_path / "in")], annotate=tmp_path / "in" / "drawn", progress=False)
    faces = detector.detect(photo, annotate=tmp_path / "drawn", progress=False)
    with pytest.raises(ValueError, match="mf2 never writes (over|into) its inputs"):
        faces.to_csv(photo)
    assert photo.read_bytes() == before and not (tmp_path / "in" / "a.png.json").exists()


def test_seed_frames_add_confirmed_faces_and_leave_the_others_as_they_are():
    """Seed frames (a video's first and every ``seed_every``-th after it) look with MTCNN's finer
    cascade too: the faces the published cascade finds stay exactly as they are (box, points,
    score), a face only the finer one finds is added only where dlib's CNN confirms it (so the
    astronaut video's neck-ring face is not), and a confirmed track is searched for after one
    detection (an unconfirmed one only after two: it may be a false face)."""
    from mf2.prediction.sources import Frame
    from mf2.prediction.stream import _seeded

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from predict import video_frames

    finder = FaceFinder("mtcnn")
    for image in video_frames(60)[::10] + [bench.group_photo()]:
        plain, seeded = finder.find([image])[0], finder.find([image], fine=True)[0]
        same = {f.box: f for f in seeded.faces}
        for f in plain.faces:  # each face found as usual, unchanged
            assert f.box in same and same[f.box].score == f.score and np.array_equal(same[f.box].landmarks, f.landmarks)
        assert not any(f.confirmed for f in plain.faces)
    assert len(finder.find([video_frames(1)[0]], fine=True)[0].faces) == 1  # no neck-ring face
    marks = [f.seed for f in _seeded([Frame("a.mp4", k) for k in range(25)] + [Frame("b.mp4", 0), Frame("x.jpg")], 12)]
    assert marks == [k % 12 == 0 for k in range(25)] + [True, False]

    tracker = Tracker(TrackSettings(), lambda *a: np.zeros(4))
    image = np.zeros((8, 8, 3), np.uint8)
    found, confirmed = _face(100, 100), _face(400, 100)
    confirmed.confirmed = True
    tracker.update(image, [found, confirmed], 0.0)
    assert [k for k, _ in tracker.searched(0.1)] == [1]
