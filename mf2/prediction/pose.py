"""Head pose (yaw, pitch, roll, degrees) from a face's 68 landmarks against a 3-D mean face.

The mean face is SynthFACS's face of mean proportions (``MEAN_IDENTITY``) with the renderer's
per-landmark depth (``DEPTH``): x right, y down, depth towards the camera, in face units. The
landmarks are fitted by a scaled orthographic camera (weak perspective: a face is small against
its distance from the camera) -- rotation ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, scale and shift,
least squares over the points that move least with expressions and with the silhouette (eye
corners and lids, nose bridge and base; not the jaw line, whose landmarks follow the visible
outline as the head turns, nor the brows and lips, which the AUs move).

Signs (the image as you see it): ``yaw`` > 0 turns the nose towards the image's right (the
person's left), ``pitch`` > 0 lifts the chin, ``roll`` > 0 tilts the head clockwise. SynthFACS
renders with the same angles (``Pose.yaw``, ``Pose.pitch``, ``Pose.roll``, radians), which is how
the error is measured (``pose_errors`` in ``benchmarks/tracking.py``, tested in ``tests/test_tracking.py``).

Pitch end to end is limited by dlib's landmarks, not by this fit (``benchmarks/results/pose-cpu.md``):
on SynthFACS renders the fit follows the renderer's pitch all the way from its own landmarks (pitch
gain 1.0), while dlib's points follow a pitched head about two thirds of the way (gain 0.62-0.68) and
scatter by about 6 degrees around that. Tried on training seeds 1-8, judged on seeds 11 and 12, and
not adopted because none brought held-out pitch near 5 degrees on both: a per-landmark, pose-dependent
correction of dlib's placement (it lifts the gain, but the scatter grows with it: 7.3 degrees on the
training seeds, 6.8 and 5.1 held out), a 3-D shape refitted to dlib's points, weights from each
point's scatter, the brows, mouth or jaw added, and even a free linear regression from all 68 points
to pitch (6.5 degrees held out); nor MTCNN's five points (the nose's height between the eyes and the
mouth), alone (8.7 held out) or beside dlib's pitch (6.5; dlib's alone, rescaled: 6.1). The renderer projects orthographically, so a perspective camera
gains nothing there; dlib's box (``face_align``) moves the figures by a degree or two.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# eyes 36-47 and nose 27-35: rigid under the 12 AUs and not on the silhouette
POSE_POINTS = np.r_[27:36, 36:48]


@lru_cache(maxsize=1)
def mean_face() -> np.ndarray:
    """[68, 3] the 3-D mean face (x, y, depth) in face units."""
    from mf2.data.synthfacs.face import DEPTH, MEAN_IDENTITY, face_landmarks

    return np.c_[face_landmarks(MEAN_IDENTITY, {}), DEPTH]


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (radians), as SynthFACS projects a face."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) radians of a rotation made by ``rotation``."""
    yaw = float(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(r[2, 1], r[2, 2]))
    roll = float(np.arctan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face with these 68 landmarks [68, 2] (image pixels)."""
    x = np.asarray(landmarks, np.float64)[POSE_POINTS]
    model = mean_face()[POSE_POINTS]
    if not np.isfinite(x).all():
        return (np.nan, np.nan, np.nan)
    r = _initial(model, x)
    params = np.r_[angles(r), 0.0, 0.0, 0.0]
    # scale and shift from the first guess, then Gauss-Newton on all six parameters
    params[3:] = _linear_scale_shift(model, x, rotation(*params[:3]))
    for _ in range(20):
        res, jac = _residuals(model, x, params)
        step = np.linalg.lstsq(jac, -res, rcond=None)[0]
        params += step
        if np.abs(step[:3]).max() < 1e-7:
            break
    yaw, pitch, roll = np.degrees(angles(rotation(*params[:3])))
    return float(yaw), float(pitch), float(roll)


def _initial(model: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A rotation from the affine camera that fits best (its 2 x 3 part made orthonormal)."""
    mc, xc = model - model.mean(0), x - x.mean(0)
    a = np.linalg.lstsq(mc, xc, rcond=None)[0].T  # [2, 3]
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    top = u @ vt
    r = np.vstack([top, np.cross(top[0], top[1])])
    return r if np.linalg.det(r) > 0 else r * np.array([[1], [1], [-1]])


def _linear_scale_shift(model, x, r):
    p = model @ r.T[:, :2]
    pc, xc = p - p.mean(0), x - x.mean(0)
    s = float((pc * xc).sum() / (pc * pc).sum())
    t = x.mean(0) - s * p.mean(0)
    return np.r_[np.log(max(s, 1e-9)), t]


def _project(model, params):
    r = rotation(*params[:3])
    return np.exp(params[3]) * (model @ r.T)[:, :2] + params[4:6]


def _residuals(model, x, params, eps: float = 1e-6):
    base = (_project(model, params) - x).ravel()
    jac = np.empty((base.size, 6))
    for k in range(6):
        p = params.copy()
        p[k] += eps
        jac[:, k] = ((_project(model, p) - x).ravel() - base) / eps
    return base, jac
