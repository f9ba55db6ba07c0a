"""3-D points → pixels: where a point from rviz2 or a grasp planner lands in the camera image.

The node looks the transform up with tf2; applying it and projecting with sensor_msgs/CameraInfo is
here, ROS-free. Rectified images use the projection matrix P; raw images use K and the distortion D.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

CAMERA_MODELS = ("rectified", "raw")
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a (normalised) quaternion given as ROS orders it: x, y, z, w."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"rotation quaternion {q.tolist()} is not a rotation (zero or not finite)")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_quaternion(matrix: np.ndarray) -> tuple[float, float, float, float]:
    """The (x, y, z, w) quaternion of a 3x3 rotation, w >= 0: the inverse of `quaternion_matrix`."""
    m = np.asarray(matrix, dtype=np.float64)
    # Shepperd: divide by the largest of the four squared components, the numerically safe one.
    squares = np.array([1 + m[0, 0] - m[1, 1] - m[2, 2], 1 - m[0, 0] + m[1, 1] - m[2, 2],
                        1 - m[0, 0] - m[1, 1] + m[2, 2], 1 + m[0, 0] + m[1, 1] + m[2, 2]])  # fmt: skip
    i = int(np.argmax(squares))
    s = 2.0 * np.sqrt(squares[i])
    if i == 0:
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif i == 1:
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    elif i == 2:
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    else:
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    sign = -1.0 if q[3] < 0 else 1.0
    return tuple(float(sign * c) for c in q)


def apply_transform(
    point: Sequence[float], translation: Sequence[float], rotation: Sequence[float]
) -> np.ndarray:
    """R(rotation) · point + translation, as geometry_msgs/TransformStamped maps source → target frame."""
    return quaternion_matrix(*rotation) @ np.asarray(point, dtype=np.float64) + np.asarray(translation, float)


def transform_fields(transform: Any) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """(translation, rotation xyzw) of a geometry_msgs/Transform (or TransformStamped)."""
    transform = getattr(transform, "transform", transform)
    t, r = transform.translation, transform.rotation
    return (float(t.x), float(t.y), float(t.z)), (float(r.x), float(r.y), float(r.z), float(r.w))


def project_point(point: Sequence[float], camera_info: Any, model: str = "rectified") -> tuple[float, float]:
    """(u, v) pixel of a point in the camera's optical frame (z forward, x right, y down).

    Raises ValueError if the point is behind the camera, camera_info is unusable for `model`, or the
    distortion model is not plumb_bob / rational_polynomial (for raw images).
    """
    x, y, z = (float(c) for c in point)
    if not np.isfinite([x, y, z]).all():
        raise ValueError(f"point ({x}, {y}, {z}) is not finite")
    if z <= 0:
        raise ValueError(
            f"point ({x:.3f}, {y:.3f}, {z:.3f}) m is behind the camera (z <= 0 in the optical frame)"
        )
    if model == "rectified":
        p = np.asarray(camera_info.p, dtype=np.float64).reshape(3, 4)
        if p[0, 0] == 0 or p[1, 1] == 0:
            raise ValueError("camera_info.p is all zeros: the camera is not calibrated; use camera_model raw")
        u, v, w = p @ np.array([x, y, z, 1.0])
        if w <= 0:
            raise ValueError(f"point ({x:.3f}, {y:.3f}, {z:.3f}) m projects behind the rectified camera")
        return float(u / w), float(v / w)
    if model != "raw":
        raise ValueError(f"unknown camera model {model!r}; use one of {', '.join(CAMERA_MODELS)}")
    k = np.asarray(camera_info.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] == 0 or k[1, 1] == 0:
        raise ValueError("camera_info.k is all zeros: the camera is not calibrated")
    d = np.asarray(camera_info.d, dtype=np.float64).reshape(-1)
    if d.size and camera_info.distortion_model not in DISTORTION_MODELS:
        raise ValueError(
            f"distortion model {camera_info.distortion_model!r} is not supported for raw images; "
            f"use {' or '.join(DISTORTION_MODELS)}, or rectify the image and use camera_model rectified"
        )
    pixels, _ = cv2.projectPoints(np.array([[x, y, z]]), np.zeros(3), np.zeros(3), k, d if d.size else None)
    u, v = pixels.reshape(2)
    return float(u), float(v)
