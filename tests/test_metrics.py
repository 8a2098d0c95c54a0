"""The paired bootstrap behind ``mf2 evaluate --beside``: its points are the table metrics'
differences, and it resamples whole videos."""

import numpy as np
import pytest

from mf2.evaluation.metrics import au_f1, emotion_scores, paired_bootstrap


def _models(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y_emo = rng.integers(0, 8, n)
    y_au = rng.integers(0, 2, (n, 12))
    y_emo[:7] = -1  # missing labels count nowhere
    y_au[5:20, 3] = -1
    def model(correct):
        emo = np.eye(8)[np.where(rng.random(n) < correct, y_emo.clip(0), rng.integers(0, 8, n))]
        au = np.where(rng.random((n, 12)) < correct, y_au.clip(0), rng.integers(0, 2, (n, 12))).astype(float)
        return emo, au * 0.8 + 0.1
    return model(0.8), model(0.5), (y_emo, y_au)


def test_points_are_the_table_metrics_differences():
    a, b, (y_emo, y_au) = _models()
    p = paired_bootstrap(a, b, (y_emo, y_au), resamples=200)
    for name, score in (("au_mean_f1", lambda m: au_f1(m[1], y_au)["mean"]),
                        ("emotion_mean_accuracy", lambda m: emotion_scores(m[0], y_emo)["mean_accuracy"])):
        assert p[name]["a"] == pytest.approx(score(a)) and p[name]["b"] == pytest.approx(score(b))
        assert p[name]["diff"] == pytest.approx(score(a) - score(b))
        assert 0 < p[name]["low"] <= p[name]["diff"] <= p[name]["high"]  # a is clearly better
    same = paired_bootstrap(a, a, (y_emo, y_au), resamples=50)
    assert all(same[k]["low"] == same[k]["high"] == 0 for k in ("au_mean_f1", "emotion_mean_accuracy"))


def test_resamples_videos_not_frames():
    a, b, (y_emo, y_au) = _models(n=60, seed=1)
    one = paired_bootstrap(a, b, (y_emo, y_au), resamples=300, seed=3)
    # every video = 5 identical frames: resampling videos gives exactly the one-frame-per-video interval
    rep = lambda m: tuple(np.repeat(x, 5, 0) for x in m)  # noqa: E731
    videos = np.repeat(np.arange(60), 5)
    by_video = paired_bootstrap(rep(a), rep(b), rep((y_emo, y_au)), videos, resamples=300, seed=3)
    by_frame = paired_bootstrap(rep(a), rep(b), rep((y_emo, y_au)), resamples=300, seed=3)
    assert by_video["groups"] == 60 and by_frame["groups"] == 300
    for k in ("au_mean_f1", "emotion_mean_accuracy"):
        assert (by_video[k]["low"], by_video[k]["high"]) == pytest.approx((one[k]["low"], one[k]["high"]))
        # treating the copies as independent images would claim a far narrower interval
        assert by_frame[k]["high"] - by_frame[k]["low"] < 0.7 * (by_video[k]["high"] - by_video[k]["low"])


def test_mismatched_inputs_are_one_line_errors():
    a, b, labels = _models(n=50)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(a, (b[0][:40], b[1][:40]), labels)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        paired_bootstrap(a, b, labels, resamples=0)
