"""3-D point → pixel with known camera_info (rectified P, raw K + D) and a tf transform."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from stt_ros.bag.messages import typestore
from stt_ros.pipeline.camera import apply_transform, project_point, quaternion_matrix, transform_fields

K = [500.0, 0, 320, 0, 500.0, 240, 0, 0, 1]
P = [400.0, 0, 300, 0, 0, 400.0, 200, 0, 0, 0, 1, 0]


def info(d=(), model="plumb_bob", p=P, k=K):
    types = typestore().types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="c"
    )
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=480,
        width=640,
        distortion_model=model,
        d=np.array(d, float),
        k=np.array(k, float),
        r=np.eye(3).reshape(-1),
        p=np.array(p, float),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def test_rectified_uses_p():
    assert project_point((0.1, -0.2, 2.0), info(), "rectified") == pytest.approx((320.0, 160.0))


def test_raw_without_distortion_uses_k():
    assert project_point((0.1, -0.2, 2.0), info(), "raw") == pytest.approx((345.0, 190.0))


@pytest.mark.parametrize(
    ("model", "d"),
    [
        ("plumb_bob", (0.1, -0.05, 0.001, 0.002, 0.01)),
        ("rational_polynomial", (0.1, -0.05, 0.001, 0.002, 0.01, 0.02, 0.0, 0.0)),
    ],
)
def test_raw_with_distortion_matches_the_model(model, d):
    x, y, z = 0.3, -0.2, 1.5
    xn, yn = x / z, y / z
    r2 = xn * xn + yn * yn
    k1, k2, p1, p2, k3, *rest = d
    k4, k5, k6 = rest or (0.0, 0.0, 0.0)
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    expected = (500 * xd + 320, 500 * yd + 240)
    assert project_point((x, y, z), info(d, model), "raw") == pytest.approx(expected, abs=1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="behind the camera"):
        project_point((0, 0, -1), info(), "rectified")
    with pytest.raises(ValueError, match="not calibrated"):
        project_point((0, 0, 1), info(p=[0.0] * 12), "rectified")
    with pytest.raises(ValueError, match="equidistant"):
        project_point((0, 0, 1), info(d=(0.1, 0, 0, 0), model="equidistant"), "raw")
    with pytest.raises(ValueError, match="camera model"):
        project_point((0, 0, 1), info(), "fisheye")


def test_transform_then_project():
    # base_link → camera optical frame: camera 1 m above the origin looking down -z of base... here a
    # 90° yaw about z plus a translation; check against the rotation matrix by hand.
    yaw = math.pi / 2
    rotation = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    np.testing.assert_allclose(quaternion_matrix(*rotation), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    stamped = NS(
        transform=NS(
            translation=NS(x=0.0, y=0.0, z=2.0),
            rotation=NS(x=rotation[0], y=rotation[1], z=rotation[2], w=rotation[3]),
        )
    )
    translation, rotation = transform_fields(stamped)
    in_camera = apply_transform((0.2, 0.1, 0.0), translation, rotation)
    np.testing.assert_allclose(in_camera, (-0.1, 0.2, 2.0), atol=1e-12)
    assert project_point(in_camera, info(), "rectified") == pytest.approx((280.0, 240.0))
    with pytest.raises(ValueError, match="not a rotation"):
        quaternion_matrix(0, 0, 0, 0)
