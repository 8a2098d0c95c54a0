"""Every command on a CUDA GPU: the tiny pipeline end to end (pretrain, finetune --dfn and
--full, evaluate, predict, and torchrun with NCCL), bf16 by default, deterministic runs when
asked. Skipped cleanly without a GPU; nothing here touches CUDA at import time."""

import json
import shutil
import subprocess

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import text_encoder_args
from mf2.cli.main import main
from mf2.runs import RunFolder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_tiny_pipeline_runs_on_cuda(pretrained, tmp_path):
    # features on the GPU; the canonical landmark template, which prediction then uses too
    cache = tmp_path / "f.zarr"
    _run("extract-features", "--manifest", pretrained / "d/manifest.jsonl", "--out", cache, "--landmarks", "canonical",
         "--device", "cuda", "--precision", "bf16", *text_encoder_args())
    _run("pretrain", "--cache", cache, "--out", tmp_path / "mf2", "--epochs", "1", "--batch-size", "8",
         "--warmup-steps", "5", "--device", "cuda")
    train = RunFolder(tmp_path / "mf2").config()["train"]
    assert train["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert train["deterministic"] is False  # the GPU default (README: what --deterministic guarantees)
    _run("pretrain", "--cache", cache, "--out", tmp_path / "ckpt", "--epochs", "1", "--batch-size", "8",
         "--warmup-steps", "5", "--device", "cuda", "--activation-checkpointing", "itm")
    _run("finetune", "--dfn", "--from", tmp_path / "mf2", "--cache", cache, "--out", tmp_path / "dfn", "--epochs", "1",
         "--batch-size", "8", "--warmup-steps", "5", "--device", "cuda")
    _run("finetune", "--full", "--from", tmp_path / "mf2", "--cache", cache, "--out", tmp_path / "full",
         "--epochs", "1", "--batch-size", "8", "--warmup-steps", "5", "--device", "cuda")
    _run("evaluate", "--checkpoint", tmp_path / "dfn", "--cache", cache, "--beside", tmp_path / "mf2", "--device", "cuda")
    metrics = RunFolder(tmp_path / "dfn").eval_metrics("val")
    assert metrics["images"] > 0 and 0 <= metrics["au"]["mean"] <= 1
    images = sorted((pretrained / "d/images").glob("*.png"))[:3]
    _run("predict", "--checkpoint", tmp_path / "dfn", *images, "--face", "aligned", "--explain", "--device", "cuda",
         "--out", tmp_path / "faces.json")
    rows = json.loads((tmp_path / "faces.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["status"] == "ok" and r["explanation"] is not None for r in rows)


def test_cuda_predictions_match_the_cpu(pretrained, tmp_path):
    """fp32 on the GPU gives the CPU's probabilities (to float rounding)."""
    from mf2.evaluation.cache_predictions import predict_split
    from mf2.features.reader import CacheReader
    from mf2.runs import load_model

    reader = CacheReader(pretrained / "f.zarr", "val")
    cpu = predict_split(load_model(pretrained / "run")[0], reader, torch.device("cpu"))
    gpu = predict_split(load_model(pretrained / "run", "cuda")[0], reader, torch.device("cuda"))
    for a, b in zip(cpu[:2], gpu[:2]):
        torch.testing.assert_close(torch.from_numpy(b), torch.from_numpy(a), rtol=1e-3, atol=1e-4)


def test_deterministic_cuda_runs_are_bit_identical(pretrained, tmp_path):
    """--deterministic on a GPU: two same-seed runs in separate processes, identical weights."""
    for name in ("a", "b"):
        proc = subprocess.run([shutil.which("mf2") or "mf2", "pretrain", "--cache", str(pretrained / "f.zarr"),
                               "--out", name, "--epochs", "1", "--batch-size", "8", "--warmup-steps", "5",
                               "--device", "cuda", "--deterministic"], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a = load_file(str(tmp_path / "a/checkpoints/epoch_0000/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/epoch_0000/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_tensor_of_a_batch_reaches_the_gpu(pretrained):
    from mf2.features.reader import CacheReader, prefetch

    reader = CacheReader(pretrained / "f.zarr", "train")
    batch = next(prefetch(reader.batches(8), "cuda"))
    tensors = [t for v in batch.values() for t in (v if isinstance(v, tuple) else (v,))]
    assert tensors and all(t.is_cuda for t in tensors)
    assert batch["tokens"].dtype == torch.float32  # float16 as stored, converted on the GPU


def test_torchrun_with_nccl(pretrained, tmp_path):
    """One process per GPU under torchrun with NCCL (on a one-GPU machine: one process)."""
    n = torch.cuda.device_count()
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", str(n), "--no-python", shutil.which("mf2") or "mf2",
                           "pretrain", "--cache", str(pretrained / "f.zarr"), "--out", str(tmp_path / "ddp"), "--epochs",
                           "1", "--batch-size", "8", "--warmup-steps", "5", "--device", "cuda"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = RunFolder(tmp_path / "ddp").config()
    assert config["world_size"] == n and RunFolder(tmp_path / "ddp").latest_checkpoint() is not None
