"""Defaults that learn at every size: schedules that scale with the run (Table VI's exactly at
the paper's scale), the best validated epoch kept and used, rare AUs weighted and thresholded,
mirrored views with swapped AU centres, and AU regions pooled from a finer map."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mf2.cli.main import main
from mf2.data import synthfacs as sf
from mf2.data.labels import AUS, EMOTIONS
from mf2.data.landmarks import AU_CENTRE_RULES, MIRROR, au_centres, mirror_landmarks
from mf2.evaluation.metrics import all_active_au_f1, selection_score, tune_thresholds
from mf2.features import schema
from mf2.features.backbones import load_vision
from mf2.data.manifest import read_manifest
from mf2.features.reader import CacheReader
from mf2.features.store import FeatureStore
from mf2.io import write_checksums
from mf2.runs import RunError, RunFolder, load_model
from mf2.training.loop import (TABLE_VI, TrainConfig, WARMUP_FRACTION, au_pos_weight, fit, make_optimizer,
                               resolve_warmup)


def test_the_paper_preset_at_the_papers_scale_resolves_to_table_vi():
    steps = 31320 // 56 * 30  # MFA's training images at Table VI's batch and epochs
    cfg = TrainConfig(device="cpu").resolved("paper", steps)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup_steps) == (30, 56, 1e-4, 0.05, 2000)
    assert {k: getattr(cfg, k) for k in TABLE_VI} == TABLE_VI
    assert TrainConfig(device="cpu").resolved("paper", 10 * steps).warmup_steps == 2000  # longer runs: still 2,000


def test_warmup_scales_with_short_runs():
    assert resolve_warmup(None, 17 * 30) == round(WARMUP_FRACTION * 510) == 61  # 960 images, batch 56, 30 epochs
    assert resolve_warmup(None, 1) == 1
    assert resolve_warmup(50, 510) == 50  # asked for: kept
    small = TrainConfig(device="cpu").resolved("small", 510)
    assert small.lr == 5e-4 and small.warmup_steps == 61
    assert TrainConfig(device="cpu").resolved("small", 510, method="dfn").lr == 1e-3
    # finetune resolves device settings first and the schedule later: the first call leaves lr open
    assert TrainConfig(device="cpu").resolved().resolved("small", 510, method="dfn").lr == 1e-3
    assert TrainConfig(device="cpu", lr=2e-4).resolved("small", 510).lr == 2e-4
    line = TrainConfig(device="cpu", warmup_steps=2000).resolved("small", 510).schedule_line(510, 17)
    assert "warm-up 2000 steps" in line and "warning: the warm-up (2000 steps) is not shorter than the run" in line
    assert "warning" not in small.schedule_line(510, 17)


def test_au_loss_weights_follow_training_frequencies():
    aus = np.zeros((100, 12), int)
    aus[:50, 0] = 1  # 50%: weight 1
    aus[:10, 1] = 1  # 10%: 9
    aus[:1, 2] = 1  # 1%: 99, capped at 20
    aus[:90, 3] = 1  # 90%: stays 1 (frequent AUs are not down-weighted)
    aus[:, 4] = -1  # never labelled: 1
    w = au_pos_weight(aus)
    assert w[:5] == [1.0, 9.0, 20.0, 1.0, 1.0]
    assert au_pos_weight(aus, "none") == [1.0] * 12
    with pytest.raises(ValueError, match="au_weighting"):
        au_pos_weight(aus, "inverse")
    assert au_pos_weight(aus, "f1") == [3.0] * 12 and au_pos_weight(aus, "f1", 0.8) == [pytest.approx(1.5)] * 12
    assert au_pos_weight(aus, "f1", 1e-9) == [20.0] * 12  # capped as the frequency weights are
    assert au_pos_weight(aus, "frequency-f1")[:5] == [3.0, 9.0, 20.0, 3.0, 3.0]  # the larger, AU by AU
    with pytest.raises(ValueError, match="au_f1_target"):
        au_pos_weight(aus, "f1", 0.0)


def _weighted_logistic(x: np.ndarray, y: np.ndarray, w: float) -> np.ndarray:
    """A 1-D logistic regression whose positives weigh w, fitted by Newton's method: [slope, bias]."""
    X, beta, s = np.stack([x, np.ones_like(x)], 1), np.zeros(2), np.where(y == 1, w, 1.0)
    for _ in range(30):
        p = 1 / (1 + np.exp(-X @ beta))
        beta -= np.linalg.solve((X * (s * p * (1 - p))[:, None]).T @ X, X.T @ (s * (p - y)))
    return beta


@pytest.mark.parametrize("prevalence,separation", [(0.05, 1.5), (0.1, 1.0), (0.5, 1.0), (0.3, 2.0)])
def test_the_f1_weighting_puts_one_half_at_the_f1_optimal_threshold(prevalence, separation):
    """With its target at the F1 an AU can reach, 'f1' weighting's 0.5 decides as the best threshold
    does, rare AU or frequent (the F1-optimal calibrated threshold is half the best F1, whatever
    the prevalence); the frequency weighting's 0.5 (a balanced decision) does not, for a rare one."""
    rng = np.random.default_rng(0)
    y = (rng.random(20000) < prevalence).astype(float)
    x = rng.normal(size=len(y)) + separation * y

    def f1(active):
        return 2 * (active & (y == 1)).sum() / (active.sum() + (y == 1).sum())

    best = max(f1(x > t) for t in np.quantile(x, np.linspace(0.001, 0.999, 999)))
    labels = y[:, None].astype(int)
    slope, bias = _weighted_logistic(x, y, au_pos_weight(labels, "f1", best)[0])
    assert f1(slope * x + bias > 0) >= best - 0.01
    if prevalence == 0.05:
        slope, bias = _weighted_logistic(x, y, au_pos_weight(labels, "frequency")[0])
        assert f1(slope * x + bias > 0) < best - 0.05


def test_thresholds_are_chosen_per_au_on_validation():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 12)) < 0.1).astype(int)
    probs = np.clip(0.3 * y + rng.random((400, 12)) * 0.35, 0, 1)  # positives score 0.3 higher, never above 0.65
    t = tune_thresholds(probs, y)
    assert t.shape == (12,) and (t < 0.5).all()  # a rare AU scored low: its best threshold is below 0.5
    y[:, 5] = -1
    assert tune_thresholds(probs, y)[5] == 0.5  # no labels: the paper's 0.5
    assert 0 < all_active_au_f1(y) < 1
    assert selection_score({"val_au_f1": 0.4, "val_emotion_mean_acc": 0.6}) == pytest.approx(0.5)
    assert selection_score({"val_au_f1": 0.4, "val_emotion_mean_acc": float("nan")}, "au") == pytest.approx(0.4)


def test_the_best_epoch_is_kept_and_used(tmp_path, monkeypatch):
    """fit keeps the best-scoring epoch beside the latest; evaluate and predict use it."""
    import mf2.training.loop as loop

    scores = iter([0.9, 0.1, 0.2])
    monkeypatch.setattr(loop, "selection_score", lambda row, tasks: next(scores))
    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(epochs=3, batch_size=2, lr=0.1, warmup_steps=1, device="cpu")
    opt = make_optimizer(model, cfg)

    class Out:
        def __init__(self, loss):
            self.loss, self.logs = loss, {}

    run = RunFolder(tmp_path / "run")
    run.prepare(False, False)
    logs = []
    fit(run, model, opt, cfg, batches=lambda e: [{"emotion": torch.zeros(2)}], validate=lambda: {"val_au_f1": 0.5},
        losses_of=lambda b: Out(model(torch.ones(2, 2)).sum()), rng_state=lambda: {"torch": torch.get_rng_state()},
        start_epoch=0, step=0, total_steps=3, log=logs.append)
    assert json.loads((run.checkpoints / "best.json").read_text())["epoch"] == 0
    assert sorted(p.name for p in run.checkpoints.glob("epoch_*")) == ["epoch_0000", "epoch_0002"]
    assert run.checkpoint("best").name == "epoch_0000" and run.checkpoint("latest").name == "epoch_0002"
    assert [r["score"] for r in run.log_rows()] == [0.9, 0.1, 0.2]


def test_evaluate_and_predict_use_the_best_checkpoint(pretrained, tmp_path):
    import shutil

    shutil.copytree(pretrained / "run", tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    latest = run.latest_checkpoint()
    shutil.copytree(latest, run.checkpoints / "epoch_0099")  # an older, 'better' epoch kept as best
    state = json.loads((run.checkpoints / "epoch_0099/state.json").read_text())
    state["au_thresholds"] = [0.3] * 12
    (run.checkpoints / "epoch_0099/state.json").write_text(json.dumps(state))
    write_checksums(run.checkpoints / "epoch_0099", ["model.safetensors", "optim.safetensors", "state.json"])  # as mf2 would
    run.set_best(run.checkpoints / "epoch_0099", 99, 0.99)
    assert load_model(run.path)[2].name == "epoch_0099" and load_model(run.path, which="latest")[2] == latest
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run.path), "--cache", str(pretrained / "f.zarr"),
                                       "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    metrics = run.eval_metrics("val")
    assert metrics["checkpoint"].endswith("epoch_0099")
    assert metrics["au_tuned"]["thresholds"]["AU1"] == 0.3 and "per-AU thresholds" in result.output
    image = sorted((pretrained / "d/images").glob("*.png"))[0]
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(run.path), str(image), "--face", "aligned",
                                       "--out", str(tmp_path / "faces.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "faces.json").read_text())["checkpoint"].endswith("epoch_0099")


def test_mirrored_landmarks_swap_each_aus_two_centres():
    spec = sf.sample_specs(8, 5)[3]
    lm = sf.landmarks_of(spec, 224)  # a posed face (yaw, roll): not symmetric
    assert (MIRROR[MIRROR] == np.arange(68)).all() and sorted(MIRROR) == list(range(68))
    mirrored = mirror_landmarks(lm, 224)
    np.testing.assert_allclose(mirrored[36], [224 - lm[45, 0], lm[45, 1]])  # right outer eye corner <- left's
    np.testing.assert_allclose(mirrored[8], [224 - lm[8, 0], lm[8, 1]])  # chin: on the midline
    c, cm = au_centres(lm), au_centres(mirrored)
    for k, au in enumerate(AUS):
        a, b, _ = AU_CENTRE_RULES[au]
        swap = MIRROR[a] == b  # a left/right pair (AU1, AU12, ...) swaps; a midline pair (AU25: lips) does not
        expected = c[k, ::-1].copy() if swap else c[k].copy()
        expected[:, 0] = 224 - expected[:, 0]
        np.testing.assert_allclose(cm[k], expected, atol=1e-9, err_msg=au)
    assert sum(MIRROR[AU_CENTRE_RULES[au][0]] == AU_CENTRE_RULES[au][1] for au in AUS) == 9
    np.testing.assert_allclose(mirror_landmarks(mirrored, 224), lm)


def test_flipped_views_and_the_finer_map(tmp_path):
    runner = CliRunner()
    for args in (["synth", "--n", "24", "--out", str(tmp_path / "d"), "--images-per-video", "4", "--no-baseline"],
                 ["extract-features", "--manifest", str(tmp_path / "d/manifest.jsonl"), "--out", str(tmp_path / "f.zarr"),
                  "--augment", "flip"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    reader = CacheReader(tmp_path / "f.zarr", "train", flip=True)
    sig = reader.store.signature
    assert sig["pooling"]["au_map"] == "stride16" and sig["pooling"]["map_size"] == [14, 14]  # EfficientNet: 7 x 7 last
    assert sig["augment"] == ["flip"] and reader.au_vision_dim == sig["pooling"]["channels"] == 112
    g = reader.store.group
    assert g["vision/au_tokens_flip"].shape == g["vision/au_tokens"].shape == (24, 12, 18, 112)
    assert not np.array_equal(g["vision/au_tokens_flip"][:4], g["vision/au_tokens"][:4])
    plain = next(CacheReader(tmp_path / "f.zarr", "train").batches(len(reader), shuffle=False))
    mixed = next(reader.batches(len(reader), shuffle=False))
    again = next(reader.batches(len(reader), shuffle=False))
    same = (plain["au_tokens"] == mixed["au_tokens"]).flatten(1).all(1)
    assert 0 < int(same.sum()) < len(reader)  # some rows mirrored, some not
    assert torch.equal(mixed["au_tokens"], again["au_tokens"])  # the same draw for the same seed and epoch
    vision = load_vision()
    assert vision(torch.zeros(1, 3, 224, 224), au_map="stride8")[1].shape == (1, 40, 28, 28)
    with pytest.raises(ValueError, match="au_map"):
        vision.resolve_au_map("stride4")


def test_mirrored_views_are_stored_for_small_training_sets_unless_told(tmp_path):
    """--augment auto stores the mirrored views when the training split is small, says so, and
    records it in the signature; none (the default) stores none; a store resumes as it began."""
    from mf2.features.extract import FLIP_AUTO_MAX_TRAIN, resolve_augment

    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--n", "16", "--out", str(tmp_path / "d"), "--images-per-video", "4",
                                  "--no-baseline"])
    assert result.exit_code == 0, result.output
    manifest = tmp_path / "d/manifest.jsonl"
    result = runner.invoke(main, ["extract-features", "--manifest", str(manifest), "--out", str(tmp_path / "a.zarr"),
                                  "--augment", "auto"])
    assert result.exit_code == 0 and "augment: flip (auto: 12 training faces, at most 5,000)" in result.output
    assert FeatureStore.open(tmp_path / "a.zarr").signature["augment"] == ["flip"]
    result = runner.invoke(main, ["extract-features", "--manifest", str(manifest), "--out", str(tmp_path / "b.zarr")])
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "b.zarr")
    assert store.signature["augment"] == [] and "vision/tokens_flip" not in store.group
    m = read_manifest(manifest)
    assert resolve_augment("auto", m, tmp_path / "b.zarr") == ((), "auto: as the store at --out began")
    assert resolve_augment("auto", m, tmp_path / "b.zarr", overwrite=True)[0] == ("flip",)
    big = type(m)([{**m.rows[0], "split": "train"}] * (FLIP_AUTO_MAX_TRAIN + 1), m.root)
    assert resolve_augment("auto", big) == ((), "auto: 5,001 training faces, more than 5,000")


def test_per_au_regions_move_the_small_muscles_and_are_recorded(tmp_path):
    """The small-face table puts AU7 on the lower lid, AU15 below the lip corners and AU26 on the chin,
    with smaller windows for AU7 and AU23; its centres mirror like the table's; a store records
    the table it was pooled with, and a run refuses a cache pooled with another."""
    from mf2.data.landmarks import au_regions, au_window_factors
    from mf2.runs import check_features

    spec = sf.sample_specs(8, 5)[3]
    lm = sf.landmarks_of(spec, 224)
    table, small = au_centres(lm), au_centres(lm, "small-face")
    r = float(np.linalg.norm(lm[39] - lm[42]))
    k = {au: AUS.index(au) for au in ("AU7", "AU15", "AU26", "AU1")}
    np.testing.assert_allclose(small[k["AU1"]], table[k["AU1"]])  # the others as DATA.md has them
    assert small[k["AU15"], :, 1].mean() - table[k["AU15"], :, 1].mean() == pytest.approx(r / 3)
    assert small[k["AU26"], :, 1].mean() > table[k["AU26"], :, 1].mean() - 0.1 * r  # down on the chin
    assert (small[k["AU7"], :, 1] > table[k["AU7"], :, 1] + 0.1 * r).all()  # from the upper lid down to the lower
    assert au_window_factors("small-face")[[k["AU7"], AUS.index("AU23")]].tolist() == [0.6, 0.6]
    assert (au_window_factors("table") == 1).all()
    mirrored = au_centres(mirror_landmarks(lm, 224), "small-face")
    for i, au in enumerate(AUS):
        a, b, _, _ = au_regions("small-face")[au]
        swap = sorted(MIRROR[list(a)]) == sorted(b)
        expected = small[i, ::-1].copy() if swap else small[i].copy()
        expected[:, 0] = 224 - expected[:, 0]
        np.testing.assert_allclose(mirrored[i], expected, atol=1e-9, err_msg=au)
    with pytest.raises(ValueError, match="au_regions"):
        au_centres(lm, "large")
    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--n", "8", "--out", str(tmp_path / "d"), "--images-per-video", "4",
                                  "--no-baseline"])
    assert result.exit_code == 0, result.output
    sigs = {}
    for regions in ("table", "small-face"):
        result = runner.invoke(main, ["extract-features", "--manifest", str(tmp_path / "d/manifest.jsonl"), "--out",
                                      str(tmp_path / f"{regions}.zarr"), "--au-regions", regions, "--augment", "none"])
        assert result.exit_code == 0, result.output
        sigs[regions] = FeatureStore.open(tmp_path / f"{regions}.zarr").signature
    assert "regions" not in sigs["table"]["pooling"] and sigs["small-face"]["pooling"]["regions"] == "small-face"
    a, b = (FeatureStore.open(tmp_path / f"{x}.zarr")["vision/au_tokens"][:] for x in ("table", "small-face"))
    assert np.array_equal(a[:, AUS.index("AU1")], b[:, AUS.index("AU1")])
    assert not np.array_equal(a[:, AUS.index("AU15")], b[:, AUS.index("AU15")])
    with pytest.raises(RunError, match="pooling.regions"):
        check_features(sigs["table"], sigs["small-face"], "a run")


def test_explanation_consistency_reads_captions_back():
    """The template captions of SynthFACS rows agree with their own labels; the same texts
    checked against another row's labels mostly do not; each of the three checks fails alone."""
    from mf2.captions.consistency import check, summarise
    from mf2.captions.template import au_sentences, emotion_caption

    specs = sf.sample_specs(120, seed=3)
    rows = [{"id": s.id, "emotion": s.expression.emotion, **s.expression.labels} for s in specs]
    texts = [(emotion_caption(r), dict(zip(AUS, au_sentences(r)))) for r in rows]

    def labels(r):
        return {a for a in AUS if r[a] == 1}, EMOTIONS[r["emotion"]]

    own = summarise([check(c, s, *labels(r)) for (c, s), r in zip(texts, rows)])
    assert own["consistent"] == 1.0 and own["faces"] == 120
    other = summarise([check(c, s, *labels(rows[(i + 7) % len(rows)])) for i, (c, s) in enumerate(texts)])
    assert other["consistent"] < 0.2
    assert check("This face looks happy. Lip corners pulled up show it.", {"AU12": "AU12 (Lip Corner Puller): the mouth "
                 "corners pull up."}, {"AU12"}, "Happiness").consistent
    assert not check("This face looks sad.", {}, {"AU12"}, "Happiness").emotion
    assert not check("This face looks happy and surprised.", {}, set(), "Happiness").emotion
    assert not check("This face looks happy. A dropped jaw shows it.", {}, {"AU12"}, "Happiness").cues
    assert not check("This face looks happy.", {"AU12": "AU12 (Lip Corner Puller) is at rest: the lip corners are not "
                     "pulled up."}, {"AU12"}, "Happiness").au_sentences


def test_predict_uses_the_runs_tuned_thresholds_unless_told(pretrained, tmp_path):
    import shutil

    from mf2 import Detector

    shutil.copytree(pretrained / "run", tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    state_path = run.latest_checkpoint() / "state.json"
    state = json.loads(state_path.read_text())
    state["au_thresholds"] = [0.0] * 6 + [1.0] * 6  # the first six always active, the last six never
    state_path.write_text(json.dumps(state))
    write_checksums(state_path.parent, ["model.safetensors", "optim.safetensors", "state.json"])  # as mf2 would
    image = sorted((pretrained / "d/images").glob("*.png"))[0]
    with Detector.from_run(run.path, device="cpu", face="aligned", num_workers=0) as det:
        faces = det.detect(image, progress=False)
        np.testing.assert_array_equal(det.predictor.thresholds, state["au_thresholds"])
    assert faces.active_aus().iloc[0].tolist() == [True] * 6 + [False] * 6
    assert faces.attrs["threshold"] == state["au_thresholds"]
    with Detector.from_run(run.path, device="cpu", face="aligned", num_workers=0, threshold=0.5) as det:
        np.testing.assert_array_equal(det.predictor.thresholds, [0.5] * 12)


def test_the_consistency_column_and_evaluates_rate(pretrained, tmp_path):
    from mf2 import Detector
    from mf2.captions.consistency import check
    from mf2.data.labels import AUS, EMOTIONS
    from mf2.models.explain import Explainer

    image = sorted((pretrained / "d/images").glob("*.png"))[0]
    with Detector.from_run(pretrained / "run", device="cpu", face="aligned", num_workers=0) as det:
        plain = det.detect(image, progress=False)
        explained = det.detect(image, explain=True, progress=False)
        explainer = det.predictor.explainer("greedy")
    assert plain["explanation_consistent"].isna().all()
    assert str(explained["explanation_consistent"].dtype) == "boolean" and explained["explanation_consistent"].notna().all()
    assert isinstance(explainer, Explainer) and explainer.grounding == "heads"
    assert explained["explanation_consistent"].all()  # grounded (the default): what the heads decided
    # the column is the consistency check of the explanation's parts against the heads' choices
    row = explained.iloc[0]
    emotion = EMOTIONS[int(np.argmax(explained.emotions.iloc[0].to_numpy()))]
    active = {a for a, on in zip(AUS, explained.active_aus().iloc[0]) if on}
    assert emotion.lower() == row["emotion"]
    csv = tmp_path / "faces.csv"
    explained.to_csv(csv)
    from mf2 import read_faces
    assert read_faces(csv)["explanation_consistent"].tolist() == explained["explanation_consistent"].tolist()
    # an explanation that names another emotion than the heads is inconsistent, one that names theirs is not
    other = next(e for e in EMOTIONS if e != emotion and e != "Other")
    assert not check(f"The face looks {other.lower()}.", {}, active, emotion).consistent
    assert check(f"The face shows {emotion.lower()}.", {}, active, emotion).emotion

    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(pretrained / "run"), "--cache",
                                       str(pretrained / "f.zarr"), "--bootstrap", "0", "--explain", "5",
                                       "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval/metrics.json").read_text())["explanations"]
    assert summary["faces"] == 5 and summary["thresholds"] in ("tuned", 0.5) and set(summary["decoders"]) == {"heads", "none"}
    for d in summary["decoders"].values():
        assert 0.0 <= d["consistent"] <= d["emotion"] <= 1.0 and len(d["examples"]) == 5
        assert all(ex["consistent"] == (ex["emotion"] and ex["cues"] and ex["au_sentences"]) for ex in d["examples"])
        assert 0.0 <= d["bleu4"] <= 1.0 and 0.0 <= d["rouge_l"] <= 1.0 and d["cider"] >= 0.0 and d["explanations_per_s"] > 0
    # grounded explanations say what the heads decided, in the FACS vocabulary, whatever the model learned
    grounded = summary["decoders"]["heads"]
    assert grounded["consistent"] == 1.0 and grounded["au_sentences_correct"] in (1.0, None)
    assert grounded["repeated_ngrams"] == 0.0
    assert "explanations consistent with the heads (heads): 100.0%" in result.output and "## Explanations" in \
        (tmp_path / "eval/tables.md").read_text()


def test_train_rows_draws_the_same_subset_for_the_model_and_the_probe(pretrained, tmp_path):
    from mf2.evaluation.probe import _rows, pooled_feature_probe
    from mf2.features.store import FeatureStore

    cache = pretrained / "f.zarr"
    all_rows = CacheReader(cache, "train").rows
    sub = CacheReader(cache, "train", limit=10, seed=3)
    assert len(sub) == 10 and set(sub.rows) <= set(all_rows) and np.all(np.diff(sub.rows) > 0)
    assert not np.array_equal(sub.rows, CacheReader(cache, "train", limit=10, seed=4).rows)
    feats, _ = _rows(FeatureStore.open(cache), "train", 10, 3)
    np.testing.assert_array_equal(feats, FeatureStore.open(cache).read("vision/tokens", 0, len(FeatureStore.open(cache)))
                                  [sub.rows][:, 0].astype(np.float32))
    assert pooled_feature_probe(cache, "val", train_rows=10, seed=3)["train_images"] == 10
    # the probe's AU thresholds tuned on another split, as a run's are: that split's best F1 thresholds
    from mf2.evaluation.metrics import au_f1, tune_thresholds

    on_val = pooled_feature_probe(cache, "val", train_rows=10, seed=3, predictions=True)
    on_train = pooled_feature_probe(cache, "train", train_rows=10, seed=3, predictions=True, thresholds_from="val")
    y = lambda split: CacheReader(cache, split).store.read(schema.AUS, 0, len(FeatureStore.open(cache)))[  # noqa: E731
        CacheReader(cache, split).rows]
    want = tune_thresholds(on_val["au_probs"], y("val"))
    assert list(on_train["au_tuned"]["thresholds"].values()) == want.tolist()
    assert on_train["au_tuned"]["mean"] == au_f1(on_train["au_probs"], y("train"), want)["mean"]
    # the AU-region probe tunes the same way; neither tunes on the split it scores
    from mf2.evaluation.probe import au_region_probe

    regions = au_region_probe(cache, "train", train_rows=10, seed=3, thresholds_from="val", predictions=True)
    assert regions["au_tuned"]["chosen_on"] == "val" and regions["au_probs"].shape == (len(y("train")), 12)
    assert regions["au"]["mean"] == au_f1(regions["au_probs"], y("train"))["mean"]
    for probe in (pooled_feature_probe, au_region_probe):
        with pytest.raises(ValueError, match="tuned on the val split they are scored on"):
            probe(cache, "val", thresholds_from="val")
    result = CliRunner().invoke(main, ["pretrain", "--cache", str(cache), "--out", str(tmp_path / "r"), "--epochs", "1",
                                       "--batch-size", "4", "--train-rows", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert RunFolder(tmp_path / "r").config()["train"]["train_rows"] == 12
    assert "3 steps" in result.output or "of 3 steps" in result.output, result.output
