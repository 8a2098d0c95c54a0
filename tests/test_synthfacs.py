"""SynthFACS: deterministic files, landmarks on the drawn features, AU evidence at each AU's
own region, balanced classes, a pixel baseline in stats.json, resume after a partial run."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mf2.data import synthfacs as sf
from mf2.data.labels import AUS, EMOTIONS
from mf2.data.landmarks import au_centres, ruler
from mf2.data.manifest import read_manifest
from mf2.evaluation.baselines import add_pixel_baseline


def test_same_seed_gives_byte_identical_files(tmp_path):
    sf.write_synthfacs(tmp_path / "a", 24, 112, seed=7, workers=1)
    sf.write_synthfacs(tmp_path / "b", 24, 112, seed=7, workers=2)
    sf.write_synthfacs(tmp_path / "c", 24, 112, seed=8, workers=1)
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(names) == 26  # 24 images, manifest, stats
    for name in names:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    assert not filecmp.cmp(tmp_path / "a" / "images/synth000000.png", tmp_path / "c" / "images/synth000000.png",
                           shallow=False)


def test_resume_renders_only_missing_images(tmp_path):
    sf.write_synthfacs(tmp_path / "a", 12, 112, seed=1, workers=1)
    reference = {p.name: p.read_bytes() for p in (tmp_path / "a/images").iterdir()}
    for name in ("synth000003.png", "synth000010.png"):
        (tmp_path / "a/images" / name).unlink()
    stats = sf.write_synthfacs(tmp_path / "a", 12, 112, seed=1, workers=1)
    assert stats["synthfacs"]["rendered"] == 2 and stats["synthfacs"]["reused"] == 10
    assert {p.name: p.read_bytes() for p in (tmp_path / "a/images").iterdir()} == reference


def _mask(size, draw):
    m = Image.new("L", (size, size), 0)
    draw(ImageDraw.Draw(m))
    return np.asarray(m) > 0


def _dist(pixels, colour):
    return float(np.linalg.norm(pixels.mean(0) - np.asarray(colour, float)))


@pytest.mark.parametrize("seed,pitch", [(s, 0.0) for s in range(6)] + [(1, 0.45), (2, -0.45)])
def test_landmarks_sit_on_the_rendered_features(seed, pitch, tmp_path):
    """Drawn landmark overlays: the lips polygon has the lip colour and the brow polylines the
    hair colour, each far more than a band of skin just outside them; the overlay itself is a
    valid image with every landmark inside the frame (also with the head pitched up or down)."""
    spec = sf.sample_specs(8, seed)[seed % 8]
    spec.pose.pitch = pitch
    spec.lighting = sf.Lighting(noise=0.0, background=spec.lighting.background)  # flat light, no noise
    image, lm = sf.render_spec(spec, 224)
    assert np.allclose(lm, sf.landmarks_of(spec, 224))
    pts = [tuple(p) for p in lm]
    lips = _mask(224, lambda d: d.polygon(pts[48:60], fill=1)) & ~_mask(224, lambda d: d.polygon(pts[60:68], fill=1))
    grown = _mask(224, lambda d: (d.polygon(pts[48:60], fill=1), d.line(pts[48:60] + [pts[48]], fill=1, width=14)))
    ring = grown & ~_mask(224, lambda d: (d.polygon(pts[48:60], fill=1), d.line(pts[48:60] + [pts[48]], fill=1, width=6)))
    px = image.reshape(-1, 3).astype(float)
    lips_colour, hair = spec.identity.lips, spec.identity.hair
    assert _dist(px[lips.ravel()], lips_colour) < 0.6 * _dist(px[ring.ravel()], lips_colour)
    thick = max(2, int(spec.identity.brow_thick * spec.pose.scale * 224 * 0.6))
    brows = _mask(224, lambda d: (d.line(pts[17:22], fill=1, width=thick), d.line(pts[22:27], fill=1, width=thick)))
    above = _mask(224, lambda d: (d.line([(x, y - 4 * thick) for x, y in pts[18:21]], fill=1, width=thick),
                                  d.line([(x, y - 4 * thick) for x, y in pts[23:26]], fill=1, width=thick)))
    assert _dist(px[brows.ravel()], hair) < 0.6 * _dist(px[above.ravel()], hair)
    overlay = Image.fromarray(image)
    d = ImageDraw.Draw(overlay)
    for x, y in pts:
        assert 0 <= x < 224 and 0 <= y < 224
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(255, 0, 0))
    overlay.save(tmp_path / "overlay.png")
    assert Image.open(tmp_path / "overlay.png").size == (224, 224)


def test_pitch_zero_is_the_projection_without_pitch_and_pitch_up_lifts_the_nose():
    """Pose.pitch defaults to 0, which leaves ``project`` (and so every render) exactly what it was
    before pitch existed: yaw with depth, then roll. A positive pitch lifts the nose tip against
    the eyes; a negative one lowers it."""
    import math

    spec = sf.sample_specs(4, 5)[2]
    assert spec.pose.pitch == 0.0
    lm = sf.face_landmarks(spec.identity, spec.expression.intensities)
    pose = spec.pose
    x = lm[:, 0] * math.cos(pose.yaw) + sf.DEPTH * math.sin(pose.yaw)
    c, s = math.cos(pose.roll), math.sin(pose.roll)
    xr, yr = c * x - s * lm[:, 1], s * x + c * lm[:, 1]
    before = np.stack([112 * (0.5 + pose.tx) + pose.scale * 112 * xr, 112 * (0.47 + pose.ty) + pose.scale * 112 * yr], 1)
    assert np.array_equal(sf.project(lm, sf.DEPTH, pose, 112), before)  # bit for bit
    frontal = sf.Pose()
    nose = {p: sf.project(lm, sf.DEPTH, sf.Pose(pitch=p), 224) for p in (-0.3, 0.0, 0.3)}
    eyes = {p: v[[36, 45], 1].mean() for p, v in nose.items()}
    rise = {p: eyes[p] - v[30, 1] for p, v in nose.items()}  # how far the nose tip sits above the eyes' line
    assert rise[0.3] > rise[0.0] + 5 > rise[-0.3] + 10, rise
    assert np.allclose(sf.project(lm, sf.DEPTH, frontal, 224), nose[0.0])


def test_relief_draws_a_shaded_nose_and_only_when_asked():
    """``Identity.relief`` is 0 for every sampled person (default and hard presets), so their renders
    are the flat drawing. With relief 1 a frontal face changes only around its nose: darker sides
    beside a lit ridge, dark nostrils; turned, the nostrils hide once the chin is well down."""
    import dataclasses

    rng = np.random.default_rng(0)
    assert all(sf.Identity.sample(rng).relief == 0 and sf.Identity.sample_hard(rng).relief == 0 for _ in range(20))
    spec = sf.sample_specs(4, 5)[1]
    spec.pose = dataclasses.replace(spec.pose, yaw=0.0, roll=0.0)
    spec.lighting = sf.Lighting(noise=0.0, background=spec.lighting.background)
    flat, lm = sf.render_spec(spec, 224)
    spec.identity = dataclasses.replace(spec.identity, relief=1.0)
    shaded, lm_shaded = sf.render_spec(spec, 224)
    assert np.array_equal(lm, lm_shaded)  # the same landmarks: only the drawing differs
    changed = np.abs(shaded.astype(int) - flat.astype(int)).max(2) > 3
    unit = spec.pose.scale * 224
    (x0, y0), (x1, y1) = lm[27:36].min(0) - 0.1 * unit, lm[27:36].max(0) + 0.1 * unit
    ys, xs = np.nonzero(changed)
    assert len(xs) > 100 and xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    grey = shaded.astype(float).mean(2)
    ridge = grey[int(lm[28, 1]), int(round(lm[28, 0]))]
    sides = [grey[int(lm[28, 1]), int(round(lm[28, 0] + side * 0.06 * unit))] for side in (-1, 1)]
    assert max(sides) < ridge - 10, (ridge, sides)
    face = sf.face_landmarks(spec.identity, spec.expression.intensities)

    def nostrils_and_ridge(pitch):  # the grey level at both nostrils' centres, and on the ridge
        posed = dataclasses.replace(spec, pose=dataclasses.replace(spec.pose, pitch=pitch))
        g = sf.render_spec(posed, 224)[0].astype(float).mean(2)
        at = sf.project(np.r_[face[[32, 34]] + [0, -0.012], face[[29]]], sf.DEPTH[[32, 34, 29]], posed.pose, 224)
        v = [g[int(round(y)), int(round(x))] for x, y in at]
        return v[:2], v[2]

    for pitch in (0.0, 0.45):  # seen frontal and with the chin up
        holes, ridge = nostrils_and_ridge(pitch)
        assert max(holes) < 0.5 * ridge, (pitch, holes, ridge)
    holes, ridge = nostrils_and_ridge(-0.9)  # chin far down: they face away, skin is seen there
    assert min(holes) > 0.7 * ridge, (holes, ridge)


@pytest.mark.parametrize("au", AUS)
def test_each_au_changes_the_face_at_its_own_region(au):
    """Switching one AU on changes pixels mostly inside that AU's two windows (side 1.6 x
    ruler around the AU centres of DATA.md): mean change inside > 3x mean change outside."""
    spec = sf.sample_specs(1, 3)[0]
    pose, light = sf.Pose(scale=0.34), sf.Lighting(noise=0.0, background=((128, 128, 128), (128, 128, 128)))
    rest = {a: 0.0 for a in AUS}
    off, lm_off = sf.render(spec.identity, rest, pose, light, 224, np.random.default_rng(0))
    on, lm_on = sf.render(spec.identity, {**rest, au: 1.0}, pose, light, 224, np.random.default_rng(0))
    diff = np.abs(on.astype(float) - off.astype(float)).sum(-1)
    centres = np.concatenate([au_centres(lm_off)[AUS.index(au)], au_centres(lm_on)[AUS.index(au)]])
    half = 0.8 * ruler(lm_off)
    yy, xx = np.mgrid[0:224, 0:224]
    inside = np.zeros((224, 224), bool)
    for cx, cy in centres:
        inside |= (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    assert diff[inside].mean() > 3 * diff[~inside].mean(), (diff[inside].mean(), diff[~inside].mean())


def test_expressions_follow_emfacs_and_classes_balance():
    specs = sf.sample_specs(800, 0)
    counts = np.bincount([s.expression.emotion for s in specs], minlength=8)
    assert np.all(np.abs(counts - 100) <= 5)
    by = {e: [s.expression for s in specs if s.expression.emotion == i] for i, e in enumerate(EMOTIONS)}
    rate = lambda e, au: np.mean([x.intensities[au] >= 0.35 for x in by[e]])  # noqa: E731
    assert rate("Happiness", "AU12") > 0.75 and rate("Happiness", "AU6") > 0.75
    assert rate("Surprise", "AU26") > 0.75 and rate("Sadness", "AU15") > 0.75
    assert rate("Anger", "AU4") > 0.75 and rate("Disgust", "AU10") > 0.75
    assert np.mean([sum(v >= 0.35 for v in x.intensities.values()) for x in by["Neutral"]]) == 0
    noisy = np.mean([x.labels[au] != (x.intensities[au] >= 0.35) for s in specs for x in [s.expression] for au in AUS])
    assert 0.005 < noisy < 0.05  # label noise near the default 2%


def test_written_dataset_has_splits_by_video_and_a_baseline(tmp_path):
    stats = sf.write_synthfacs(tmp_path, 480, 112, seed=0, images_per_video=8)
    add_pixel_baseline(tmp_path)
    m = read_manifest(tmp_path / "manifest.jsonl")
    assert len(m) == 480 and all(len(r["landmarks"]) == 68 for r in m.rows)
    videos = {}
    for r in m.rows:
        videos.setdefault(r["video"], set()).add(r["split"])
    assert all(len(s) == 1 for s in videos.values())
    assert stats["splits"]["val"]["images"] == pytest.approx(96, abs=16)
    base = json.loads(Path(tmp_path / "stats.json").read_text())["pixel_logistic_baseline"]
    assert set(base["emotion"]["per_class_accuracy"]) == set(EMOTIONS)
    assert base["emotion"]["mean_accuracy"] > 0.2  # chance is 0.125
    assert set(base["au"]["per_au"]) == set(AUS)


def test_the_default_data_set_is_unchanged_by_the_presets(tmp_path):
    """The quickstart's and the README's figures come from the default data set: its manifest (all
    labels, splits and landmarks) and its images are the ones every earlier version wrote, byte for
    byte, and its stats.json has no new keys."""
    import hashlib

    stats = sf.write_synthfacs(tmp_path, 40, 112, seed=0, workers=1)
    digest = hashlib.sha256((tmp_path / "manifest.jsonl").read_bytes()).hexdigest()
    assert digest == "acd51764d6f7039589a466fd39ed86c80a60f4f42cd2b4e1b5e4eff560f74ce0"
    images = hashlib.sha256()
    for path in sorted((tmp_path / "images").iterdir()):
        images.update(path.name.encode() + path.read_bytes())
    assert images.hexdigest() == "2923a895954d2345f9d9bfabf98c2d03dac5f5cbf2f46106c61f060cccc4ed6d"
    assert set(stats["synthfacs"]) == {"n", "size", "seed", "images_per_video", "val_fraction", "label_noise",
                                       "rendered", "reused"}
    assert sorted(p.suffix for p in (tmp_path / "images").iterdir()) == [".png"] * 40


def test_the_hard_preset_holds_small_grey_and_colour_jpegs_with_a_test_split(tmp_path):
    stats = sf.write_synthfacs(tmp_path / "a", 64, seed=3, workers=2, preset_name="hard")
    sf.write_synthfacs(tmp_path / "b", 64, seed=3, workers=1, preset_name="hard")
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all(filecmp.cmp(tmp_path / "a" / n, tmp_path / "b" / n, shallow=False) for n in names)  # seeded
    m = read_manifest(tmp_path / "a/manifest.jsonl")
    sides, modes = [], set()
    for r in m.rows:
        with Image.open(m.image_path(r)) as im:
            assert im.format == "JPEG" and im.size[0] == im.size[1]
            sides.append(im.size[0])
            modes.add(im.mode)
    assert 48 <= min(sides) < 70 and 90 < max(sides) <= 112 and modes == {"L", "RGB"}
    splits = {}
    for r in m.rows:
        splits.setdefault(r["video"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values()) and {s.pop() for s in splits.values()} == {"train", "val", "test"}
    assert stats["splits"]["test"]["videos"] == 2 and stats["synthfacs"]["preset"] == "hard"  # 8 videos of 8
    # the manifest's landmarks are a detector's: near the exact ones (in the stored image's pixels), not on them
    specs = sf.sample_specs(64, 3, preset_name="hard")
    for spec, row in zip(specs[:8], m.rows):
        exact = sf.landmarks_of(spec, 112) * spec.capture.side / 112
        error = np.linalg.norm(np.asarray(row["landmarks"]) - exact, axis=1) / ruler(exact)
        assert 0.02 < error.mean() < 0.4, error.mean()
    # subtle AUs: most active intensities are weak (the default draws them in [0.35, 1])
    active = [v for s in sf.sample_specs(400, 0, preset_name="hard") for au, v in s.expression.intensities.items()
              if s.expression.labels[au] and v >= 0.2]
    assert np.mean(np.array(active) < 0.35) > 0.15 and min(active) < 0.25


def test_hard_identities_vary_beyond_the_default_ones():
    default = [sf.Identity.sample(np.random.default_rng(i)) for i in range(200)]
    hard = [sf.Identity.sample_hard(np.random.default_rng(i)) for i in range(200)]
    assert not any(i.glasses or i.beard or i.fringe or i.age or i.texture for i in default)
    for share, name in ((0.25, "glasses"), (0.25, "beard"), (0.25, "fringe"), (0.4, "texture")):
        assert abs(np.mean([bool(getattr(i, name)) for i in hard]) - share) < 0.1, name
    assert np.ptp([i.face_w for i in hard]) > 1.5 * np.ptp([i.face_w for i in default])
    # a hard face with glasses and a beard still carries its AU evidence where the table says
    ident = next(i for i in hard if i.glasses and i.beard)
    pose, light = sf.Pose(scale=0.34), sf.Lighting(noise=0.0, background=((128, 128, 128), (128, 128, 128)))
    rest = {a: 0.0 for a in AUS}
    off, lm = sf.render(ident, rest, pose, light, 224, np.random.default_rng(0))
    on, _ = sf.render(ident, {**rest, "AU12": 1.0}, pose, light, 224, np.random.default_rng(0))
    diff = np.abs(on.astype(float) - off.astype(float)).sum(-1)
    (x0, y0), (x1, y1) = au_centres(lm)[AUS.index("AU12")]
    assert diff[int(min(y0, y1)) - 10:int(max(y0, y1)) + 10, int(x0) - 10:int(x1) + 10].mean() > 5 * diff.mean() / 4


def test_bad_preset_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        sf.sample_specs(8, 0, preset_name="harder")
    with pytest.raises(ValueError, match="112 px"):
        sf.write_synthfacs(tmp_path, 8, 224, preset_name="hard")
    with pytest.raises(ValueError, match="test_fraction"):
        sf.sample_specs(8, 0, val_fraction=0.5, test_fraction=0.5)


def test_each_hard_departure_is_its_own_preset_field_and_cues_make_creases_visible():
    import dataclasses

    hard = sf.PRESETS["hard"]
    assert (hard.intensities, hard.wide_identity, hard.wide_pose, hard.harsh_light, hard.capture) == \
        ("subtle", True, True, True, True)
    with pytest.raises(ValueError, match="intensities"):
        dataclasses.replace(hard, intensities="loud")
    for bad in (dict(floor=-1.0), dict(floor=float("nan")), dict(width=0.0), dict(width=float("inf"))):
        with pytest.raises(ValueError, match="cues"):
            sf.Cues(**bad)
    # posed: every active AU at least half shown
    sf.PRESETS["_posed"] = dataclasses.replace(sf.PRESETS["default"], name="_posed", intensities="posed")
    try:
        active = [v for s in sf.sample_specs(200, 0, preset_name="_posed")
                  for au, v in s.expression.intensities.items() if v >= 0.2]
    finally:
        del sf.PRESETS["_posed"]
    assert min(active) >= 0.5 and max(active) <= 1.0
    # a crease floor darkens AU4's glabella lines and furrow on dark skin more than 0.72 x the skin
    # alone does (the brows' own move is the same); AU1's wider forehead lines cover more pixels
    ident = sf.Identity.sample(np.random.default_rng(1))
    dark = dataclasses.replace(ident, skin=(70, 45, 35))
    pose, light = sf.Pose(scale=0.34), sf.Lighting(noise=0.0, background=((128, 128, 128), (128, 128, 128)))
    rest = {a: 0.0 for a in AUS}

    def change(cues, au="AU4"):
        off, _ = sf.render(dark, rest, pose, light, 224, np.random.default_rng(0), cues)
        on, _ = sf.render(dark, {**rest, au: 1.0}, pose, light, 224, np.random.default_rng(0), cues)
        d = np.abs(on.astype(float) - off.astype(float)).mean(-1)
        return d.sum(), (d > 8).sum()

    plain, floored = change(sf.Cues()), change(sf.Cues(floor=60))
    assert floored[0] > 1.15 * plain[0] and floored[1] > 1.2 * plain[1], (plain, floored)
    plain, wide = change(sf.Cues(floor=60), "AU1"), change(sf.Cues(floor=60, width=2.0), "AU1")  # forehead lines
    assert wide[0] > 1.3 * plain[0] and wide[1] > 1.15 * plain[1], (plain, wide)
    # the defaults draw as before the setting existed (the pinned data sets check the bytes)
    a, _ = sf.render(ident, rest, pose, light, 224, np.random.default_rng(0))
    b, _ = sf.render(ident, rest, pose, light, 224, np.random.default_rng(0), sf.Cues(floor=0.0, width=1.0))
    assert np.array_equal(a, b)
