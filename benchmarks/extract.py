"""Feature extraction throughput: images/s end to end and time per stage.

    python benchmarks/extract.py [--n 1000] [--sizes 112 224] [--precision fp32 bf16] [--device cpu]

SynthFACS images (template captions, manifest landmarks, --face aligned), the offline
backbones (EfficientNet-Lite0 + MiniLM), batch 32, into a fresh store each run. Writes
benchmarks/results/extract-<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, table  # noqa: E402

import torch  # noqa: E402

from mf2.captions.run import caption_manifest  # noqa: E402
from mf2.captions.template import TemplateCaptioner  # noqa: E402
from mf2.data.manifest import read_manifest, write_manifest  # noqa: E402
from mf2.data.synthfacs import write_synthfacs  # noqa: E402
from mf2.features.extract import STAGES, ExtractSettings, extract_features  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"synth{size}"
            write_synthfacs(data, args.n, size, seed=0)
            m = read_manifest(data / "manifest.jsonl")
            captioned, _ = caption_manifest(m, TemplateCaptioner())
            write_manifest(captioned, data / "manifest.jsonl")
            m = read_manifest(data / "manifest.jsonl")
            for precision in args.precision:
                settings = ExtractSettings(batch_size=args.batch_size, device=args.device, precision=precision)
                s = extract_features(m, Path(tmp) / f"f{size}{precision}.zarr", settings, log=lambda *_: None)
                per_image = {k: round(1e3 * v / args.n, 2) for k, v in s["stage_seconds"].items()}
                bound = max(STAGES, key=lambda k: s["stage_seconds"][k])
                rows.append({"image_px": size, "precision": precision, "images": args.n,
                             "images_per_s": s["images_per_second"], "seconds": s["seconds"],
                             **{f"{k}_ms": per_image[k] for k in STAGES}, "bound_by": bound})
                print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine(torch.device(args.device)), "backbones": "efficientnet_lite0 + minilm (offline)",
              "batch_size": args.batch_size, "input_size": 224, "runs": rows}
    md = "\n\n".join([f"# Feature extraction, {args.n} SynthFACS images ({args.device}; ms per image by stage)",
                      table(rows, ["image_px", "precision", "images_per_s", *[f"{k}_ms" for k in STAGES], "bound_by"])])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"extract-{args.device}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"extract-{args.device}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
