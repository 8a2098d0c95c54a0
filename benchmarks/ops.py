"""Native ops vs their pure-PyTorch references: forward + backward time, ratio in one run.

    python benchmarks/ops.py [--device cpu|cuda] [--repeats 20] [--bottleneck 64 192 768]

au_region_pool: B=56, K=24 centres (12 AUs x 2), R=3, maps 14x14x768 (ViT-B/16) and 7x7x1280
(EfficientNet-Lite0), each with NCHW and channels-last input. The native op is compared with
the fastest of three pure-PyTorch formulations on the same input (grid_sample on the map as
given, grid_sample on an NCHW copy, gather on a channels-last copy).
dfn_pathway: N=12 cells, B=56, D=768, gradients for every parameter and input, against the
eager PyTorch loop; several bottleneck widths r, because the matmuls both sides share grow
with r while the fused part does not.
Writes benchmarks/results/ops-<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, median_ms, table  # noqa: E402

from mf2.ops import _native, au_region_pool, dfn_pathway  # noqa: E402
from mf2.ops.au_region_pool import sample_grid  # noqa: E402


def gather_pool(fmap_bhwc, centres, window, R):
    """Pure-PyTorch pooling by gathering the four taps from a channels-last map (border)."""
    B, H, W, C = fmap_bhwc.shape
    grid = sample_grid(centres, window[:, None].expand(-1, centres.shape[1]), R).flatten(1, 2)  # [B, K*RR, 2]
    u = (grid[..., 0] * W - 0.5).clamp(0, W - 1)
    v = (grid[..., 1] * H - 0.5).clamp(0, H - 1)
    x0, y0 = u.floor(), v.floor()
    wx1, wy1 = u - x0, v - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    flat = fmap_bhwc.reshape(B, H * W, C)

    def tap(y, x):
        return torch.gather(flat, 1, (y * W + x)[..., None].expand(-1, -1, C))

    out = ((1 - wy1) * (1 - wx1))[..., None] * tap(y0, x0) + ((1 - wy1) * wx1)[..., None] * tap(y0, x1) \
        + (wy1 * (1 - wx1))[..., None] * tap(y1, x0) + (wy1 * wx1)[..., None] * tap(y1, x1)
    return out.reshape(B, centres.shape[1], R * R, C)


def bench_pool(device, repeats):
    rows = []
    B, K, R = 56, 24, 3
    for (H, W, C) in [(14, 14, 768), (7, 7, 1280)]:
        for layout in ("NCHW", "channels_last"):
            g = torch.Generator().manual_seed(0)
            base = torch.randn(B, C, H, W, generator=g).to(device)
            fmap = base.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else base
            fmap.requires_grad_(True)
            centres = (torch.rand(B, K, 2, generator=g) * 0.8 + 0.1).to(device)
            window = torch.full((B,), 0.15, device=device)
            grad = torch.randn(B, K, R * R, C, generator=g).to(device)

            def run(pool):
                def step():
                    fmap.grad = None
                    pool().backward(grad)
                return step

            native = median_ms(run(lambda: au_region_pool(fmap, centres, window, R, implementation="native")),
                               device, repeats)
            refs = {
                "grid_sample": run(lambda: au_region_pool(fmap, centres, window, R, implementation="reference")),
                "grid_sample_nchw_copy": run(lambda: au_region_pool(fmap.contiguous(), centres, window, R,
                                                                    implementation="reference")),
                "gather_channels_last": run(lambda: gather_pool(fmap.permute(0, 2, 3, 1).contiguous(), centres,
                                                                window, R)),
            }
            ref_ms = {name: median_ms(fn, device, repeats) for name, fn in refs.items()}
            best = min(ref_ms, key=ref_ms.get)
            rows.append({"op": "au_region_pool", "shape": f"B{B} {H}x{W}x{C} K{K} R{R}", "input": layout,
                         "native_ms": native, **{f"{k}_ms": v for k, v in ref_ms.items()},
                         "best_reference": best, "speedup": ref_ms[best] / native})
    return rows


def bench_dfn(device, repeats, bottlenecks):
    rows = []
    N, B, D = 12, 56, 768
    for r in bottlenecks:
        g = torch.Generator().manual_seed(0)
        args = [torch.randn(B, D, generator=g), torch.randn(N, B, D, generator=g),
                torch.randn(N, r, D, generator=g) * D ** -0.5, torch.zeros(N, r),
                torch.randn(N, D, r, generator=g) * r ** -0.5, torch.zeros(N, D), torch.zeros(N)]
        args = [a.to(device).requires_grad_(True) for a in args]
        grad = torch.randn(N, B, D, generator=g).to(device)

        def run(impl):
            def step():
                for a in args:
                    a.grad = None
                dfn_pathway(*args, lam=0.1, implementation=impl).backward(grad)
            return step

        native = median_ms(run("native"), device, repeats)
        eager = median_ms(run("reference"), device, repeats)
        rows.append({"op": "dfn_pathway", "shape": f"N{N} B{B} D{D} r{r}", "input": "contiguous",
                     "native_ms": native, "eager_ms": eager, "speedup": eager / native})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bottleneck", type=int, nargs="+", default=[64, 192, 768])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    if not _native.available():
        sys.exit(f"ops.py: the native extension is not available ({_native.load_error()}); install mf2 first")
    _native.require(torch.empty(0, device=device), "benchmarks/ops.py")

    pool_rows = bench_pool(device, args.repeats)
    dfn_rows = bench_dfn(device, args.repeats, args.bottleneck)
    result = {"machine": machine(device), "native": _native.build_info(), "repeats": args.repeats,
              "au_region_pool": pool_rows, "dfn_pathway": dfn_rows}
    md = "\n\n".join([
        f"# Native ops vs PyTorch references ({device}, fwd+bwd, median of {args.repeats})",
        table(pool_rows, ["shape", "input", "native_ms", "grid_sample_ms", "grid_sample_nchw_copy_ms",
                          "gather_channels_last_ms", "best_reference", "speedup"]),
        table(dfn_rows, ["shape", "native_ms", "eager_ms", "speedup"]),
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"ops-{device.type}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"ops-{device.type}.md").write_text(md + "\n")
    print(json.dumps(result, indent=2))
    print()
    print(md)


if __name__ == "__main__":
    main()
