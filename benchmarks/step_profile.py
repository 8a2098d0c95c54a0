"""Where one MF² pretraining step's work goes, before and after issue 26, counted on the CPU:
kernel launches per pass, bytes written, FLOPs and host synchronisations, and the time of both
steps measured in turn.

    python benchmarks/step_profile.py [--preset small|paper] [--batches 2,4] [--steps 3] [--toy]

A forward and backward (no optimizer step: on a GPU the fused AdamW is a few launches) of the
current ``MF2`` and of the frozen step before issue 26 (``baseline_step.BaselineMF2``), with the
same weights and batch (``epoch_time.py``'s random tensors of each preset's feature shapes).

* launches: the aten operations that reach a kernel, counted below autograd and autocast with a
  ``TorchDispatchMode`` (views, allocations and metadata excluded), per Q-Former pass (image,
  text, joint = ITM, decode = ITG), the rest of the forward, and the backward. What a GPU runs
  differs in two places only: dropout is one kernel there (three ops here: bernoulli_, div_,
  mul), and attention with dropout is one fused kernel there, so the attention dropout is
  switched off here (CPU attention with dropout falls back to a decomposition). The figures
  count the same Python-side work a GPU step launches.
* MB written: the bytes of every output of those operations (memory traffic, one direction).
  With two batches, the difference per added sample is the part that grows with the batch (at
  a small batch the weights' gradients dominate).
* GFLOP: ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and attention).
* host syncs: operations whose result size or value the host must wait for on a GPU
  (nonzero, unique, item, masked_select).
* ms: forward + backward on this CPU, the two steps in turn (median of ``--steps``); on a shared
  machine, the ratio is the figure to read.

Writes benchmarks/results/step_profile-<preset>-cpu.{json,md} (``-toy`` with ``--toy``).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import epoch_time  # noqa: E402
from _timing import machine, table  # noqa: E402
from baseline_step import BaselineMF2  # noqa: E402
from baseline_step import QFormer as BaselineQFormer  # noqa: E402

from mf2.devices import autocast  # noqa: E402
from mf2.models import qformer  # noqa: E402

PASSES = ("image", "text", "joint", "decode")
SYNCS = {"nonzero", "_unique2", "unique_dim", "unique_consecutive", "_local_scalar_dense", "masked_select"}
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "alias", "lift_fresh",
             "scalar_tensor", "is_same_size", "equal", "set_", "resize_", "_to_copy_noop"}


class Counter(TorchDispatchMode):
    """Launches, bytes written and host syncs of the aten operations run under it, by phase, and
    the peak of the bytes their outputs hold alive (each storage counted once, until its last
    tensor dies: what the step allocates beyond its weights and inputs, activations saved for
    the backward and recomputation caches included)."""

    def __init__(self):
        super().__init__()
        self.phase = "forward"
        self.launches, self.bytes, self.syncs = collections.Counter(), collections.Counter(), collections.Counter()
        self.live, self.refs, self.held, self.peak = {}, collections.Counter(), 0, 0

    def _release(self, key):
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.held -= self.live.pop(key)
            del self.refs[key]

    def _track(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self.live:
            self.live[key] = storage.nbytes()
            self.held += storage.nbytes()
            self.peak = max(self.peak, self.held)
        self.refs[key] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)]
        for t in outputs:
            if t.device.type != "meta" and t.untyped_storage().nbytes():
                self._track(t)
        name = func._schema.name.split("::")[-1]
        if func.is_view or name in NO_KERNEL:
            return out
        self.launches[self.phase] += 1
        if name in SYNCS:
            self.syncs[self.phase] += 1
        self.bytes[self.phase] += sum(t.numel() * t.element_size() for t in outputs)
        return out


def _tag_passes(counter: Counter):
    """Attribute the forward's operations to the Q-Former pass they run in (both classes)."""
    originals = []
    for cls in (qformer.QFormer, BaselineQFormer):
        for name in PASSES:
            fn = getattr(cls, name)

            def tagged(self, *a, _fn=fn, _name=name, **k):
                outer = counter.phase
                counter.phase = _name if outer == "forward" else outer
                try:
                    return _fn(self, *a, **k)
                finally:
                    counter.phase = outer

            originals.append((cls, name, fn))
            setattr(cls, name, tagged)
    return originals


def models(preset: str):
    """(current, before) with the same weights, attention dropout off (see the module's notes)."""
    torch.manual_seed(0)
    new = epoch_time.model(preset).train()
    old = BaselineMF2(new.cfg).train()
    old.load_state_dict(new.state_dict())
    for net in (new, old):
        for m in net.modules():
            if hasattr(m, "dropout") and isinstance(m.dropout, float):
                m.dropout = 0.0
    return {"after": new, "before": old}


def forward_backward(net, b, precision):
    with autocast(precision, "cpu"):
        out = net(b, "both", torch.Generator().manual_seed(0), True)
    out.loss.backward()
    net.zero_grad(set_to_none=True)
    return out


def count(net, b, precision) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    counter = Counter()
    originals = _tag_passes(counter)
    try:
        with counter:
            with autocast(precision, "cpu"):
                out = net(b, "both", torch.Generator().manual_seed(0), True)
            counter.phase = "backward"
            out.loss.backward()
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    net.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as flops:
        forward_backward(net, b, precision)
    phases = [*PASSES, "forward", "backward"]
    return {"launches": sum(counter.launches.values()), "forward_launches": sum(counter.launches.values())
            - counter.launches["backward"], "backward_launches": counter.launches["backward"],
            **{f"{p}_launches": counter.launches[p] for p in phases[:-2]},
            "other_forward_launches": counter.launches["forward"],
            "mb_written": sum(counter.bytes.values()) / 2 ** 20, "gflop": flops.get_total_flops() / 1e9,
            "host_syncs": sum(counter.syncs.values()), "peak_mb": counter.peak / 2 ** 20}


def paired_ms(fns: dict, steps: int) -> dict:
    """Median ms of each function, run in turn (A B A B ...) after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["small", "paper"], default="small")
    p.add_argument("--batches", default=None, help="Comma-separated batch sizes (default: 8,16 small; 2,4 paper).")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--checkpointing", default="none",
                   help="Comma-separated activation-checkpointing modes to count (the step before issue 26 knows "
                        "none, itm and all).")
    p.add_argument("--steps", type=int, default=3, help="Timed steps of each (0: count only).")
    p.add_argument("--toy", action="store_true", help="epoch_time.py's toy widths (for the tests; figures mean nothing).")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = p.parse_args()
    epoch_time.TOY = a.toy
    batches = [int(x) for x in (a.batches or ("2,4" if a.preset == "paper" or a.toy else "8,16")).split(",")]
    modes = a.checkpointing.split(",")
    nets = models(a.preset)
    rows = []
    for B in batches:
        b = epoch_time.batch(a.preset, B, torch.device("cpu"))
        for mode in modes:
            steps = {name: net for name, net in nets.items() if name == "after" or mode in ("none", "itm", "all")}
            for net in steps.values():
                net.set_activation_checkpointing(mode)
            counted = {name: count(net, b, a.precision) for name, net in steps.items()}
            timed = paired_ms({k: (lambda n=n: forward_backward(n, b, a.precision)) for k, n in steps.items()},
                              a.steps) if a.steps else {}
            for name in ("before", "after"):
                if name in counted:
                    rows.append({"step": name, "checkpointing": mode, "batch": B, **counted[name],
                                 "ms": timed.get(name)})
                    print(json.dumps(rows[-1]), flush=True)
    find = lambda step, mode, B: next((r for r in rows if (r["step"], r["checkpointing"], r["batch"]) == (step, mode, B)),  # noqa: E731
                                      None)
    if len(batches) > 1:  # the part that grows with the batch
        lo, hi = batches[0], batches[-1]
        for mode in modes:
            for name in ("before", "after"):
                a_row, b_row = find(name, mode, lo), find(name, mode, hi)
                if a_row and b_row:
                    rows.append({"step": f"{name}, per added sample", "checkpointing": mode, "batch": f"{lo}->{hi}",
                                 **{k: (b_row[k] - a_row[k]) / (hi - lo) for k in ("mb_written", "gflop", "peak_mb")}})
    ratios = {}
    for mode in modes:
        for B in batches:
            before, after = find("before", mode, B), find("after", mode, B)
            if before and after:
                ratios[f"{mode}, batch {B}"] = {k: after[k] / before[k] for k in
                                                ("launches", "mb_written", "gflop", "peak_mb", "ms", "host_syncs")
                                                if before.get(k) and after.get(k) is not None}
    result = {"machine": machine(torch.device("cpu")), "preset": a.preset, "precision": a.precision, "toy": a.toy,
              "rows": rows, "after_over_before": ratios}
    cols = ["step", "checkpointing", "batch", "launches", "forward_launches", "backward_launches",
            *[f"{x}_launches" for x in PASSES], "other_forward_launches", "mb_written", "gflop", "peak_mb", "host_syncs",
            "ms"]
    md = [f"# One MF² pretraining step (forward + backward), before and after issue 26: {a.preset} preset, "
          f"{a.precision}, counted on the CPU", "", table(rows, cols), "",
          "After / before: " + "; ".join(f"{k}: " + ", ".join(f"{n} {v:.3f}" for n, v in r.items())
                                         for k, r in ratios.items()), "",
          "launches: aten operations that reach a kernel (views and allocations excluded), counted below autograd "
          "and autocast; attention dropout off (fused on a GPU either way). MB written: bytes of their outputs. "
          "peak_mb: the most bytes the step's own tensors held at once (activations saved for the backward, "
          "recomputation caches, gradients). ms: this CPU, the two steps in turn (median). See the script's notes."]
    a.out.mkdir(parents=True, exist_ok=True)
    name = f"step_profile-{a.preset}-cpu" + ("-toy" if a.toy else "")
    (a.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
