"""mf2.Detector throughput and memory (issue 14): faces/s on photos and on a video, with and
without explanations, and peak RSS of a 60 s and a 600 s video, each in a process of its own.

    python benchmarks/predict.py [--checkpoint RUN] [--photos 200] [--size 224] [--seconds 60]
                                 [--long-seconds 600] [--fps 5] [--batch-size 32] [--device cpu]

* Photos: ``--photos`` single-face photos at ``--size`` px (crops of ``skimage.data.astronaut()``
  at random scale, shift, rotation, flip and brightness; JPEG), as one folder.
* Video: ``--seconds`` of 25 fps, 320x240 (a window moving over the same photo), sampled at
  ``--fps``; ``--long-seconds`` of the same for the memory comparison.
* The model: ``--checkpoint`` (a run or an exported folder), or by default a DFN run of the
  ``small`` preset on 64 SynthFACS images made here (speed does not depend on training).
* Load time (the Detector, then a first photo: dlib's models load in the worker threads) is
  reported apart from the timed runs. Faces/s counts faces with a result.
* Beside py-feat's published CPU figure for its Detectorv2 at batch 1 (9 frames/s; their
  figure and machine, not measured here).

Writes benchmarks/results/predict-<device>.{json,md}. The machine's load average is recorded
with every figure: on a shared machine the figures are lower bounds.
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

PYFEAT = {"name": "py-feat Detectorv2, CPU, batch 1 (published)", "frames_per_s": 9.0}


def make_run(root: Path) -> Path:
    """A small-preset MF² + DFN run on 64 SynthFACS images, like the quickstart's, in minutes."""
    dfn = root / "run-dfn"
    if (dfn / "checkpoints/latest.json").is_file():
        return dfn
    mf2 = [sys.executable, "-m", "mf2.cli.main"]
    for args in (["synth", "--n", "64", "--size", "112", "--out", str(root / "synth"), "--images-per-video", "4",
                  "--no-baseline"],
                 ["caption", "--manifest", str(root / "synth/manifest.jsonl")],
                 ["extract-features", "--manifest", str(root / "synth/manifest.jsonl"), "--out", str(root / "f.zarr")],
                 ["pretrain", "--cache", str(root / "f.zarr"), "--out", str(root / "run"), "--preset", "small",
                  "--epochs", "1", "--batch-size", "16", "--overwrite"],
                 ["finetune", "--dfn", "--from", str(root / "run"), "--cache", str(root / "f.zarr"), "--out", str(dfn),
                  "--epochs", "1", "--batch-size", "16", "--overwrite"]):
        subprocess.run(mf2 + args, check=True, capture_output=True, cwd=root)  # not beside a source tree
    return dfn


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
    t0 = time.perf_counter()
    faces = det.detect(inputs, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    n = int((faces["status"] == "ok").sum())
    frames = faces.attrs["counts"]["frames"]
    return {"frames": frames, "faces": n, "seconds": round(seconds, 2), "faces_per_s": round(n / seconds, 2),
            "frames_per_s": round(frames / seconds, 2), "load_avg": round((load0 + os.getloadavg()[0]) / 2, 2)}


def peak_rss(checkpoint, video, args) -> dict:
    """One video through ``Detector.detect`` in a fresh process: its peak RSS (MiB)."""
    proc = subprocess.run([sys.executable, __file__, "--rss", str(video), "--checkpoint", str(checkpoint), "--fps",
                           str(args.fps), "--batch-size", str(args.batch_size), "--device", args.device],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_child(args) -> None:
    from mf2 import Detector

    det = Detector.from_run(args.checkpoint, device=args.device, num_workers=_workers(args.workers))
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
    parser.add_argument("--seconds", type=float, default=60.0, help="video length for faces/s")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="the long video for peak RSS (0: skip)")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="auto", help="face-finding threads ('auto' or a number)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, help="keep the photos, videos and run here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--rss", help=argparse.SUPPRESS)  # internal: one video in this process
    args = parser.parse_args()
    if args.rss:
        return rss_child(args)

    from mf2 import Detector

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint or make_run(work)
        photos = make_photos(work / f"photos{args.size}", args.photos, args.size)
        video = make_video(work / f"video{int(args.seconds)}s.mp4", args.seconds)
        long_video = make_video(work / f"video{int(args.long_seconds)}s.mp4", args.long_seconds) \
            if args.long_seconds else None
        first = sorted(photos.glob("*.jpg"))[0]

        t0 = time.perf_counter()
        det = Detector.from_run(checkpoint, device=args.device, num_workers=_workers(args.workers))
        built = time.perf_counter() - t0
        det.detect(first, progress=False)  # dlib's models load in the worker threads; first batch
        load = {"detector_s": round(built, 2), "first_photo_s": round(time.perf_counter() - t0 - built, 2)}
        print(f"load: {load}", flush=True)
        rows = []
        for name, inputs, kwargs in (
                (f"{args.photos} photos, {args.size} px", photos, {}),
                (f"{args.photos} photos, {args.size} px, --explain", photos, {"explain": True}),
                (f"{args.seconds:g} s video, 25 fps, --fps {args.fps:g}", video, {"fps": args.fps}),
                (f"{args.seconds:g} s video, 25 fps, --fps {args.fps:g}, --explain", video,
                 {"fps": args.fps, "explain": True})):
            rows.append({"input": name, **timed(det, inputs, batch_size=args.batch_size, **kwargs)})
            print(json.dumps(rows[-1]), flush=True)
        det.close()
        serial = Detector.from_run(checkpoint, device=args.device, num_workers=0)
        serial.detect(first, progress=False)
        rows.append({"input": f"{args.photos} photos, {args.size} px, num_workers=0 (faces found between batches)",
                     **timed(serial, photos, batch_size=args.batch_size)})  # torch then takes every core
        print(json.dumps(rows[-1]), flush=True)
        memory = [{"video": f"{args.seconds:g} s", **peak_rss(checkpoint, video, args)}]
        if long_video:
            memory.append({"video": f"{args.long_seconds:g} s", **peak_rss(checkpoint, long_video, args)})
        for m in memory:
            print(json.dumps(m), flush=True)

    growth = memory[-1]["peak_rss_mib"] / memory[0]["peak_rss_mib"] - 1 if len(memory) > 1 else None
    result = {"machine": {**machine(torch.device(args.device)), "cores": os.cpu_count()},
              "model": str(checkpoint) if args.checkpoint else "small-preset DFN run on 64 SynthFACS images",
              "batch_size": args.batch_size, "workers": args.workers, "load": load, "runs": rows, "memory": memory,
              "rss_growth_long_vs_short": None if growth is None else round(growth, 4), "pyfeat": PYFEAT}
    md = "\n\n".join([
        f"# mf2.Detector on the {args.device} ({os.cpu_count()} cores; batch {args.batch_size}, "
        f"face-finding threads {args.workers})",
        f"Load: Detector {load['detector_s']} s, then the first photo {load['first_photo_s']} s (dlib's models).",
        table(_shown(rows), ["input", "frames", "faces", "seconds", "faces_per_s", "frames_per_s", "load_avg"]),
        f"{PYFEAT['name']}: {PYFEAT['frames_per_s']:g} frames/s (their machine).",
        "Peak RSS of `Detector.detect` on a video at --fps {:g}, each in a fresh process:".format(args.fps),
        table(_shown(memory), ["video", "rows", "faces", "seconds", "peak_rss_mib", "end_rss_mib"]),
        f"Long vs short: {100 * growth:+.1f}%." if growth is not None else "",
        "load_avg: the machine's 1-minute load average during the run (2 = both cores busy); figures taken "
        "beside other work are lower bounds."])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"predict-{args.device}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"predict-{args.device}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
