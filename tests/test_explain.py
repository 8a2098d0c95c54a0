"""Explanations grounded in the heads (issue 24): the FACS lattices every grounded explanation is
a path of say what the labels say, in each AU's own words, without repeats; the decoder's search
over them finds the path its ITG head likes best; the text readers (per-AU sentence correctness,
repeated n-grams) and the caption scores (pycocoevalcap) read what they should."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from mf2.captions.consistency import au_sentence_correct, check, repeats, sentences
from mf2.captions.facs import ACTIVE, active_sentence
from mf2.captions.template import TEMPLATES, emotion_caption, key_au_caption, lattice
from mf2.data.labels import AUS, EMOTIONS


def _paths(parts: list[list[str]]) -> list[str]:
    return ["".join(p) for p in itertools.product(*parts)]


def _rows(n: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        active = set(rng.sample(AUS, rng.choice([0, 1, 2, 3, 5, 7, 12])))
        rows.append({"id": f"x{i}", "emotion": i % len(EMOTIONS), **{a: int(a in active) for a in AUS}})
    return rows


@pytest.mark.parametrize("write", [emotion_caption, key_au_caption], ids=["emotion", "key_au"])
def test_every_path_of_a_caption_lattice_agrees_with_its_labels(write):
    for row in _rows():
        parts = lattice(write, {**row, "id": ""})
        paths = _paths(parts)
        assert write(row) in paths  # the template's own caption for this image is one of them
        active = {a for a in AUS if row[a] == 1}
        for text in paths:
            assert check(text, {}, active, EMOTIONS[row["emotion"]]).consistent, (row, text)
            assert not any(repeats(s) for s in sentences(text)), text
            assert text.endswith(".") and "  " not in text


def test_an_au_sentence_lattice_is_that_aus_own_active_descriptions():
    for au in AUS:
        parts = lattice(active_sentence, au, "")
        paths = _paths(parts)
        assert len(paths) == len(ACTIVE[au]) and active_sentence(au, "img7") in paths
        for text in paths:
            assert au_sentence_correct(au, text, True) and not au_sentence_correct(au, text, False)
            assert all(not au_sentence_correct(other, text, True) for other in AUS if other != au)
            assert not repeats(text)


def test_the_readers_of_text():
    # the examples of the ungrounded decoder
    assert repeats("The raised inner brows, raised inner brows, raised outer brows, raised outer brows.")
    assert not au_sentence_correct("AU4", "AU4 (Brow Lowerer): the brows are not pulled are not.", True)
    assert not au_sentence_correct("AU6", "AU6 (Cheek Raiser): the cheeks are pulled down.", True)
    assert not au_sentence_correct("AU12", "AU12 (Lip Corner Puller): the mouth corners are raised, creasing the "
                                           "middle of the forehead.", True)
    assert au_sentence_correct("AU12", "AU12 (Lip Corner Puller): the mouth corners pull up.", True)
    assert au_sentence_correct("AU12", "AU12: lip corners pulled up.", True)  # the AU caption's short form
    assert au_sentence_correct("AU12", "AU12 (Lip Corner Puller) is at rest: the lip corners are not pulled up.", False)
    assert not au_sentence_correct("AU12", "AU12 (Lip Corner Puller) is at rest: the lip corners are not pulled up.", True)
    assert not au_sentence_correct("AU12", "AU12 (Lip Tightener): the mouth corners pull up.", True)  # another's name
    assert sentences("This face looks happy. Cues such as x show it.\n1. AU6: y.") == [
        "This face looks happy.", "Cues such as x show it.", "1.", "AU6: y."]


def test_caption_scores_come_from_pycocoevalcap():
    from mf2.evaluation.metrics import caption_scores

    refs = [["the lips are parted and the jaw is dropped"], ["the brows are lowered and drawn together"]]
    same = caption_scores([r[0] for r in refs], refs)
    assert same["bleu4"] == pytest.approx(1.0, abs=1e-6) and same["rouge_l"] == pytest.approx(1.0)
    other = caption_scores(["a cat sits on a mat", "green ideas sleep furiously"], refs)
    assert other["bleu4"] < 1e-6 and other["rouge_l"] == 0.0 and other["cider"] == 0.0
    half = caption_scores(["the lips are parted", "the brows are lowered and drawn together"], refs)
    assert 0 < half["bleu4"] < 1 and 0 < half["rouge_l"] < 1 and 0 < half["cider"] < same["cider"]
    with pytest.raises(ValueError, match="references"):
        caption_scores(["x"], [])


@pytest.fixture(scope="module")
def opened(pretrained):
    from mf2.evaluation.cache_predictions import open_run
    from mf2.features.backbones import load_tokenizer
    from mf2.features.reader import prefetch
    from mf2.runs import RunFolder

    model, _, reader = open_run(pretrained / "run", pretrained / "f.zarr", "val", "cpu")
    signature = RunFolder(pretrained / "run").features()
    batch = next(iter(prefetch(reader.batches(6, shuffle=False, drop_last=False), torch.device("cpu"))))
    return model, load_tokenizer(signature["text"]["name"]), signature["text"], batch


@pytest.mark.parametrize("decoding", ["greedy", "beam"])
def test_grounded_explanations_say_what_the_heads_decided(opened, decoding):
    from mf2.models.explain import Explainer

    model, tokenizer, text, batch = opened
    emo, _ = (t.numpy() for t in model.predict(batch["tokens"], batch["au_tokens"]))
    # the heads' AU decisions, forced here so that faces differ: face i has AUs i, i+3, i+6 (and all at face 5)
    au = np.zeros((len(emo), len(AUS)), np.float32)
    for i in range(len(emo)):
        au[i, [i % 12, (i + 3) % 12, (i + 6) % 12]] = 0.9
    au[-1] = 0.9
    explained = Explainer(model, tokenizer, text, decoding).explain(batch["tokens"], batch["au_tokens"], au, emo)
    for i, e in enumerate(explained):
        active = [a for a, p in zip(AUS, au[i]) if p >= 0.5]
        assert e.consistent, e.text
        assert list(e.au_sentences) == active
        assert all(au_sentence_correct(a, s, True) for a, s in e.au_sentences.items())
        assert e.caption in _paths(lattice(TEMPLATES[model.cfg.emo_text],
                                           {"id": "", "emotion": int(np.argmax(emo[i])), **{a: int(a in active) for a in AUS}}))
        assert not any(repeats(s) for s in sentences(e.text))
    with pytest.raises(ValueError, match="grounding"):
        Explainer(model, tokenizer, text, decoding, grounding="labels")


def test_constrained_decoding_finds_the_wording_the_decoder_likes_best(opened):
    """A beam as wide as the lattice has paths keeps them all: it returns the path of highest
    ITG log-likelihood per token, scored here path by path; greedy keeps to a path too; and
    the step-by-step decoder (keys and values kept) reads what a whole pass reads."""
    from mf2.models.explain import Explainer, Lattice
    from mf2.models.qformer import BOS

    model, tokenizer, text, batch = opened
    feats = model.image_features(batch["tokens"], batch["au_tokens"], keep_kv=True)
    wide = Explainer(model, tokenizer, text, "beam", beams=9)
    greedy = Explainer(model, tokenizer, text, "greedy")
    row = {"id": "", "emotion": 4, **{a: int(a in ("AU6", "AU12")) for a in AUS}}
    parts = lattice(TEMPLATES[model.cfg.emo_text], row)
    paths = _paths(parts)
    assert len(paths) == 9
    for face in range(2):
        past = [(k[[face]], v[[face]]) for k, v in feats.emo_kv]
        scores = []
        for p in paths:
            ids = torch.tensor([[BOS, *wide.ids(p), wide.end]])
            logp = model.emo_vl.lm_head(model.emo_vl.qformer.decode(None, ids, torch.ones_like(ids, dtype=torch.bool),
                                                                    past)).log_softmax(-1)[0, :-1]
            scores.append(float(logp.gather(1, ids[0, 1:, None]).mean().detach()))
        assert wide.grounded(model.emo_vl, past, [parts]) == [paths[int(np.argmax(scores))]]
        assert greedy.grounded(model.emo_vl, past, [parts])[0] in paths
    automaton = Lattice(parts, wide.ids, wide.end)
    state = automaton.start()
    for t in wide.ids(paths[4]) + [wide.end]:
        assert t in automaton.allowed(state) and not automaton.accepting(state)
        state = automaton.advance(state, t)
    assert automaton.accepting(state) and automaton.text(wide.ids(paths[4]) + [wide.end]) == paths[4]
    assert automaton.text(wide.ids(paths[4])[:3]) in paths  # a path cut short is completed
