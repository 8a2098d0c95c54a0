"""MTCNN (Zhang et al., 2016), the cascade of P-, R- and O-Net, in PyTorch, batched over images
on any device, with the weights that ship inside the ``facenet-pytorch`` wheel (MIT licence;
its ``data/{pnet,rnet,onet}.pt``). Only the weights are read from that package: its own
detection code calls torchvision's compiled ``batched_nms``, which does not load beside the CPU
build of torch (DATA.md), so the cascade and its non-maximum suppression are written here.

    det = MTCNN(device="cpu")
    found = det.detect([image_a, image_b])  # RGB uint8 [H, W, 3] each -> per image (boxes, scores, points)

Each image's result: ``boxes`` [n, 4] (x0, y0, x1, y1, pixels), ``scores`` [n] (O-Net's face
probability) and ``points`` [n, 5, 2] (eyes, nose tip, mouth corners; the subject's right eye
first). Images of one size (the frames of a video) go through each stage as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).reshape(len(x), -1)  # the weights' (w, h, c) order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu4(self.conv4(self.pool3(self.prelu3(self.conv3(x))))).permute(0, 3, 2, 1).reshape(len(x), -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)[:, 1]


def weights_path(name: str):
    """The packaged weights of ``name`` ('pnet', 'rnet', 'onet') inside facenet-pytorch, found
    without importing it (its ``__init__`` imports torchvision's ops and requests)."""
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("facenet_pytorch")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.pt" if spec else None
    if path is None or not path.is_file():
        raise ImportError("the MTCNN face detector needs the weights in facenet-pytorch: "
                          "pip install --no-deps 'facenet-pytorch>=2.5.3'")
    return path


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union",
        groups: torch.Tensor | None = None, flags: torch.Tensor | None = None):
    """Greedy non-maximum suppression: indices of the boxes kept, best first. Boxes overlapping a
    kept one of the same ``groups`` entry (e.g. image index) by more than ``threshold`` (IoU, or
    intersection over the smaller box with ``mode='min'``) are dropped. The overlaps are computed
    on the boxes' device; the greedy pass runs on the CPU. ``flags`` (bool per box): also return,
    per box kept, whether it or a box it dropped carries the flag."""
    if len(boxes) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return empty if flags is None else (empty, torch.zeros(0, dtype=torch.bool, device=boxes.device))
    order = torch.argsort(scores, descending=True)
    b = boxes[order].double()
    area = (b[:, 2] - b[:, 0] + 1).clamp(min=0) * (b[:, 3] - b[:, 1] + 1).clamp(min=0)
    iw = (torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1]) + 1).clamp(min=0)
    inter = iw * ih
    denom = torch.minimum(area[:, None], area[None, :]) if mode == "min" else area[:, None] + area[None, :] - inter
    over = inter / denom.clamp(min=1e-9) > threshold
    if groups is not None:
        g = groups[order]
        over &= g[:, None] == g[None, :]
    over = over.cpu().numpy()
    flag = None if flags is None else flags[order].cpu().numpy().astype(bool)
    removed = np.zeros(len(b), bool)
    keep, carried = [], []
    for i in range(len(b)):
        if not removed[i]:
            keep.append(i)
            if flag is not None:
                carried.append(bool(flag[i] or flag[over[i] & ~removed].any()))
            removed |= over[i]
    kept = order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]
    return kept if flags is None else (kept, torch.as_tensor(carried, dtype=torch.bool, device=boxes.device))


@dataclass
class Found:
    boxes: np.ndarray  # [n, 4] x0, y0, x1, y1
    scores: np.ndarray  # [n] face probability
    points: np.ndarray  # [n, 5, 2]
    strict: np.ndarray  # [n] bool: its P- and R-Net scores also passed the ``strict`` stages asked for


class MTCNN:
    """The three-stage cascade. ``min_face``: the smallest face side searched for (pixels; None:
    a twelfth of the image's shorter side, within 20-40 px -- 30 px in a 360p frame, 40 from
    480p up -- since the first, largest pyramid level costs the most);
    ``thresholds``: the stages' face probabilities a candidate needs (the last is the lowest score
    reported, so that callers can count near-misses under their own threshold)."""

    def __init__(self, device="cpu", min_face: int | None = None, thresholds=(0.6, 0.7, 0.5), factor: float = 0.709):
        self.device = torch.device(device)
        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for net, name in ((self.pnet, "pnet"), (self.rnet, "rnet"), (self.onet, "onet")):
            with weights_path(name).open("rb") as f:
                net.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
            net.to(self.device).eval()

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray], thresholds=None, min_face: int | None = None,
               strict: tuple | None = None, factor: float | None = None) -> list[Found]:
        """Per image (RGB uint8 [H, W, 3]), the faces found; images of one size share batches.
        ``thresholds`` and ``min_face``: this call's own (None: the detector's). ``strict``: P- and
        R-Net thresholds (above this call's) a face's own path is also marked against
        (``Found.strict``); None: every face is marked as passing. ``factor``: this call's pyramid
        step (None: the detector's)."""
        out: list[Found | None] = [None] * len(images)
        by_size: dict[tuple, list[int]] = {}
        for k, im in enumerate(images):
            by_size.setdefault(im.shape[:2], []).append(k)
        for indices in by_size.values():
            batch = torch.from_numpy(np.stack([images[k] for k in indices])).to(self.device)
            for k, found in zip(indices, self._detect(batch.permute(0, 3, 1, 2).float(),
                                                      tuple(thresholds or self.thresholds), min_face or self.min_face,
                                                      strict, factor or self.factor)):
                out[k] = found
        return out

    def _detect(self, imgs: torch.Tensor, thresholds: tuple, min_face: int | None, strict: tuple | None,
                factor: float) -> list[Found]:
        n, _, h, w = imgs.shape
        t1, t2, t3 = thresholds
        marking = strict is not None
        s1, s2 = strict if marking else (t1, t2)

        def suppress(b, o, flags, mode="union"):
            """NMS (0.7) and each kept box's flag: carried from the boxes it dropped when marking,
            else simply its own (all passing: no extra work on the hot path)."""
            if marking:
                return nms(b[:, :4], b[:, 4], 0.7, mode, groups=o, flags=flags)
            keep = nms(b[:, :4], b[:, 4], 0.7, mode, groups=o)
            return keep, flags[keep]
        # stage 1: P-Net over an image pyramid, fully convolutional
        boxes, owners = [], []
        min_face = min_face or int(np.clip(round(min(h, w) / 12), 20, 40))
        scale = 12.0 / min_face
        side = min(h, w) * scale
        while side >= 12:
            size = (int(h * scale + 1), int(w * scale + 1))
            # area averaging from the image itself, as the weights were trained (a bilinear pyramid
            # built level from level is faster and found fewer SynthFACS faces: 29 of 40 against 34)
            level = F.interpolate(imgs, size=size, mode="area")
            reg, prob = self.pnet(_normalise(level))
            b, o = _candidates(reg, prob, scale, t1)
            keep = nms(b[:, :4], b[:, 4], 0.5, groups=o)
            boxes.append(b[keep])
            owners.append(o[keep])
            scale *= factor
            side *= factor
        if not boxes:
            return [_empty() for _ in range(n)]
        boxes, owners = torch.cat(boxes), torch.cat(owners)
        # passed: whether a candidate, or one it stood for in a suppression, is on a strict path
        keep, passed = suppress(boxes, owners, boxes[:, 4] >= s1)
        boxes, owners = boxes[keep], owners[keep]
        wb, hb = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * wb, boxes[:, 1] + boxes[:, 6] * hb,
                             boxes[:, 2] + boxes[:, 7] * wb, boxes[:, 3] + boxes[:, 8] * hb, boxes[:, 4]], 1)
        boxes = _square(boxes)
        # stage 2: R-Net on 24 x 24 crops
        if len(boxes):
            reg, prob = _batched(self.rnet, _crops(imgs, boxes, owners, 24))
            ok = prob > t2
            passed = passed[ok] & (prob[ok] > s2)
            boxes = torch.cat([boxes[ok, :4], prob[ok, None]], 1)
            owners, reg = owners[ok], reg[ok]
            keep, passed = suppress(boxes, owners, passed)
            boxes, owners = _square(_regress(boxes[keep], reg[keep])), owners[keep]
        # stage 3: O-Net on 48 x 48 crops, with the five points
        points = torch.zeros(0, 5, 2, device=imgs.device)
        if len(boxes):
            reg, pts, prob = _batched(self.onet, _crops(imgs, boxes, owners, 48))
            ok = prob > t3
            boxes = torch.cat([boxes[ok, :4], prob[ok, None]], 1)
            owners, reg, pts, passed = owners[ok], reg[ok], pts[ok], passed[ok]
            wb, hb = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
            points = torch.stack([wb[:, None] * pts[:, :5] + boxes[:, 0:1] - 1,
                                  hb[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1], 2)
            boxes = _regress(boxes, reg)
            keep, passed = suppress(boxes, owners, passed, "min")
            boxes, owners, points = boxes[keep], owners[keep], points[keep]
        boxes, owners, points = boxes.cpu().double().numpy(), owners.cpu().numpy(), points.cpu().double().numpy()
        passed = passed.cpu().numpy().astype(bool) if len(boxes) else np.zeros(0, bool)
        return [Found(boxes[owners == k, :4], boxes[owners == k, 4], points[owners == k], passed[owners == k])
                for k in range(n)]


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _empty() -> Found:
    return Found(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), np.zeros(0, bool))


def _candidates(reg, prob, scale, threshold):
    """P-Net cells above ``threshold`` -> [m, 9] (box at image scale, score, 4 offsets), owners [m]."""
    mask = prob >= threshold
    idx = mask.nonzero()
    owners = idx[:, 0]
    score = prob[mask]
    offsets = reg.permute(0, 2, 3, 1)[mask]
    cell = idx[:, 1:].to(reg.dtype).flip(1)  # (x, y)
    q1 = ((2 * cell + 1) / scale).floor()
    q2 = ((2 * cell + 12) / scale).floor()
    return torch.cat([q1, q2, score[:, None], offsets], 1), owners


def _regress(boxes, reg):
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, :4] = boxes[:, :4] + reg * torch.stack([w, h, w, h], 1)
    return out


def _square(boxes):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def _crops(imgs, boxes, owners, size: int, supersample: int = 2) -> torch.Tensor:
    """Each box's pixels (zero outside the image) as size x size: sampled bilinearly at
    ``supersample`` x the size and averaged down (close to area averaging), all of one image's
    boxes in one ``grid_sample`` call."""
    n_img, _, h, w = imgs.shape
    m = size * supersample
    t = (torch.arange(m, device=imgs.device, dtype=imgs.dtype) + 0.5) / m  # [m] in (0, 1)
    b = boxes[:, :4].to(imgs.dtype)
    out = torch.empty((len(b), 3, size, size), device=imgs.device, dtype=imgs.dtype)
    for k in range(n_img):
        mine = (owners == k).nonzero().flatten()
        if not len(mine):
            continue
        bk = b[mine]
        xs = bk[:, 0:1] + t[None] * (bk[:, 2:3] - bk[:, 0:1] + 1)  # [j, m] pixel coordinates
        ys = bk[:, 1:2] + t[None] * (bk[:, 3:4] - bk[:, 1:2] + 1)
        gx = (2 * xs / w - 1)[:, None, :].expand(-1, m, -1)  # normalised, align_corners=False
        gy = (2 * ys / h - 1)[:, :, None].expand(-1, -1, m)
        grid = torch.stack([gx, gy], -1).reshape(1, len(mine) * m, m, 2)
        sampled = F.grid_sample(imgs[k:k + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.reshape(3, len(mine), m, m).permute(1, 0, 2, 3)
        out[mine] = F.avg_pool2d(sampled, supersample) if supersample > 1 else sampled
    return _normalise(out)


def _batched(net, x: torch.Tensor, chunk: int = 512):
    outs = [net(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    return tuple(torch.cat(parts) for parts in zip(*outs))

