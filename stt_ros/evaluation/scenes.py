"""Deterministic synthetic camera scenes with instance masks.

No SAM checkpoint or labelled camera data is available where the project is built, so the reference
model is trained, evaluated and demonstrated on these scenes, and `stt make-sample-bag` records them.
Every scene is a pure function of its seed (and size), so held-out sets are just disjoint seed ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("ellipse", "rectangle", "polygon", "star", "blob")
TEXTURES = ("solid", "stripes", "checker", "noise", "gradient")
MIN_OBJECT_PX = 20
MIN_SCENE_SIDE = 64  # px: room for a few objects of the smallest size
MIN_VISIBLE_FRACTION = 0.25  # instances occluded beyond this are dropped from the ground truth
MIN_VISIBLE_PX = 60


@dataclass(frozen=True)
class Scene:
    """An RGB uint8 image (HxWx3) and its instance map (HxW uint16, 0 = background, 1..K objects)."""

    image: np.ndarray
    instances: np.ndarray

    @property
    def num_instances(self) -> int:
        return int(self.instances.max())

    def masks(self) -> list[np.ndarray]:
        """One boolean HxW mask per instance, in id order (id k is `masks()[k - 1]`)."""
        return [self.instances == k for k in range(1, self.num_instances + 1)]


@dataclass
class _Object:
    """An object in its own frame: a textured patch and its mask, placed by centre, angle and scale."""

    patch: np.ndarray  # h x w x 3 uint8
    mask: np.ndarray  # h x w uint8 (0/255)
    center: np.ndarray  # (x, y) in image pixels
    angle: float  # degrees
    velocity: np.ndarray  # pixels per frame
    spin: float  # degrees per frame


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(40, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, height: int, width: int, kind: str) -> np.ndarray:
    """An h x w x 3 float32 texture in [0, 255]."""
    base = _random_color(rng)
    if kind == "solid":
        return np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    other = _random_color(rng)
    theta = rng.uniform(0, math.pi)
    along = xs * math.cos(theta) + ys * math.sin(theta)
    if kind == "stripes":
        period = rng.uniform(4, 24)
        weight = (np.sin(along * 2 * math.pi / period) > 0).astype(np.float32)
    elif kind == "checker":
        cell = rng.uniform(4, 20)
        across = -xs * math.sin(theta) + ys * math.cos(theta)
        weight = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)
    elif kind == "noise":
        small = rng.random((max(2, height // 6), max(2, width // 6)), dtype=np.float32)
        weight = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR) * rng.uniform(0.3, 1.0)
    elif kind == "gradient":
        span = float(along.max() - along.min()) or 1.0
        weight = (along - along.min()) / span
    else:
        raise ValueError(f"unknown texture {kind!r}; expected one of {TEXTURES}")
    return base + weight[..., None] * (other - base)


def _shape_mask(rng: np.random.Generator, height: int, width: int, kind: str) -> np.ndarray:
    """An h x w uint8 (0/255) mask filling most of its box."""
    mask = np.zeros((height, width), np.uint8)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    rx, ry = width / 2 - 1, height / 2 - 1
    if kind == "ellipse":
        cv2.ellipse(mask, (round(cx), round(cy)), (max(1, round(rx)), max(1, round(ry))), 0, 0, 360, 255, -1)
    elif kind == "rectangle":
        mask[:] = 255
    elif kind in ("polygon", "star", "blob"):
        n = {"polygon": int(rng.integers(3, 9)), "star": int(rng.integers(4, 8)) * 2, "blob": 48}[kind]
        if kind == "polygon":
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        else:
            angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
        if kind == "star":
            radii = np.where(np.arange(n) % 2 == 0, 1.0, rng.uniform(0.35, 0.6))
        elif kind == "blob":
            radii = np.ones(n)
            for harmonic in range(2, 5):
                radii += rng.uniform(0, 0.25 / harmonic * 2) * np.cos(harmonic * angles + rng.uniform(0, 6.3))
            radii /= radii.max()
        else:
            radii = rng.uniform(0.75, 1.0, n)
        points = np.stack([cx + rx * radii * np.cos(angles), cy + ry * radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    else:
        raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")
    return mask


def _make_object(rng: np.random.Generator, size: float, width: int, height: int) -> _Object:
    aspect = rng.uniform(0.4, 1.0)
    long_side = max(MIN_OBJECT_PX, round(size))
    short_side = max(MIN_OBJECT_PX * 2 // 3, round(size * aspect))
    h, w = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    mask = _shape_mask(rng, h, w, shape)
    patch = _texture(rng, h, w, texture)
    # A linear shading ramp, so objects look lit rather than flat.
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phi = rng.uniform(0, 2 * math.pi)
    ramp = (xs / w - 0.5) * math.cos(phi) + (ys / h - 0.5) * math.sin(phi)
    patch = np.clip(patch * (1.0 + rng.uniform(0.1, 0.5) * ramp[..., None]), 0, 255).astype(np.uint8)
    margin = 0.15 * size
    center = np.array([rng.uniform(-margin, width + margin), rng.uniform(-margin, height + margin)])
    speed = rng.uniform(0.5, 6.0)
    heading = rng.uniform(0, 2 * math.pi)
    return _Object(
        patch=patch,
        mask=mask,
        center=center,
        angle=float(rng.uniform(0, 360)),
        velocity=np.array([speed * math.cos(heading), speed * math.sin(heading)]),
        spin=float(rng.uniform(-3, 3)),
    )


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured, cluttered backdrop (float32 HxWx3) whose clutter is deliberately unlabelled."""
    top, bottom = _random_color(rng) * 0.8, _random_color(rng) * 0.8
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top + t * (bottom - top), (height, width, 3)).copy()
    low = rng.standard_normal((height // 48 + 2, width // 48 + 2, 1), dtype=np.float32)
    low = low * np.float32(1.0) + 0.3 * rng.standard_normal((*low.shape[:2], 3), dtype=np.float32)
    image += cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(4, 15)
    if rng.random() < 0.5:  # a faint floor / wall texture
        kind = ("stripes", "checker", "noise")[int(rng.integers(3))]
        image += (_texture(rng, height, width, kind) - 128.0) * rng.uniform(0.05, 0.2)
    clutter = np.zeros((height, width, 3), np.float32)
    for _ in range(int(rng.integers(5, 40))):  # small, low-contrast specks and scratches
        color = tuple(float(c) for c in rng.uniform(-40, 40, 3))
        x, y = int(rng.integers(width)), int(rng.integers(height))
        if rng.random() < 0.5:
            cv2.circle(clutter, (x, y), int(rng.integers(1, 6)), color, -1)
        else:
            end = (x + int(rng.integers(-60, 60)), y + int(rng.integers(-60, 60)))
            cv2.line(clutter, (x, y), end, color, int(rng.integers(1, 3)))
    return image + clutter


def _place(obj: _Object, width: int, height: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """The object's patch and mask rotated into image space: (rgb, mask, (x0, y0)), or None if off-image."""
    h, w = obj.mask.shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), obj.angle, 1.0)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ matrix.T
    extent = corners.max(0) - corners.min(0)
    x0 = math.floor(obj.center[0] - extent[0] / 2)
    y0 = math.floor(obj.center[1] - extent[1] / 2)
    x1, y1 = x0 + math.ceil(extent[0]) + 1, y0 + math.ceil(extent[1]) + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    # Map patch coordinates to the clipped destination box.
    matrix[0, 2] += obj.center[0] - (w - 1) / 2 - cx0
    matrix[1, 2] += obj.center[1] - (h - 1) / 2 - cy0
    size = (cx1 - cx0, cy1 - cy0)
    rgb = cv2.warpAffine(obj.patch, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(obj.mask, matrix, size, flags=cv2.INTER_LINEAR) >= 128
    return rgb, mask, (cx0, cy0)


def _render(objects: list[_Object], background: np.ndarray, rng: np.random.Generator) -> Scene:
    height, width = background.shape[:2]
    image = background.copy()
    ids = np.zeros((height, width), np.int32)
    full_area = []
    for index, obj in enumerate(objects, start=1):
        placed = _place(obj, width, height)
        if placed is None:
            full_area.append(0)
            continue
        rgb, mask, (x0, y0) = placed
        h, w = mask.shape
        region = image[y0 : y0 + h, x0 : x0 + w]
        region[mask] = rgb[mask]
        ids[y0 : y0 + h, x0 : x0 + w][mask] = index
        full_area.append(int(mask.sum()))
    # Keep instances that stay visible enough; relabel them 1..K in drawing order.
    visible = np.bincount(ids.ravel(), minlength=len(objects) + 1)
    relabel = np.zeros(len(objects) + 1, np.uint16)
    next_id = 1
    for index, area in enumerate(full_area, start=1):
        if area and visible[index] >= max(MIN_VISIBLE_PX, MIN_VISIBLE_FRACTION * area):
            relabel[index] = next_id
            next_id += 1
    # Camera: slight defocus, vignetting and sensor noise.
    image = cv2.GaussianBlur(image, (0, 0), 0.6)
    ys = ((np.arange(height, dtype=np.float32) - height / 2) / height) ** 2
    xs = ((np.arange(width, dtype=np.float32) - width / 2) / width) ** 2
    image *= (1.0 - 0.5 * (ys[:, None] + xs[None, :]))[..., None]
    image += rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(1.0, 5.0))
    return Scene(image=np.clip(image, 0, 255).astype(np.uint8), instances=relabel[ids])


def _layout(seed: int, width: int, height: int) -> tuple[list[_Object], np.ndarray, np.random.Generator]:
    if width < MIN_SCENE_SIDE or height < MIN_SCENE_SIDE:
        raise ValueError(f"scene size must be at least {MIN_SCENE_SIDE}x{MIN_SCENE_SIDE}, got {width}x{height}")
    rng = np.random.default_rng([seed, width, height])
    background = _background(rng, width, height)
    count = int(rng.integers(3, 13))
    short = min(width, height)
    largest = max(MIN_OBJECT_PX + 1.0, 0.45 * short)
    sizes = np.exp(rng.uniform(math.log(MIN_OBJECT_PX), math.log(largest), count))
    if rng.random() < 0.6:  # often one object spans more than half the image
        sizes[0] = rng.uniform(0.5, 0.85) * short
    # Mostly big-behind-small, with enough noise that small objects are sometimes occluded too.
    order = np.argsort(-(np.log(sizes) + rng.normal(0, 0.6, count)))
    objects = [_make_object(rng, float(sizes[i]), width, height) for i in order]
    return objects, background, rng


def generate_scene(seed: int, width: int = 640, height: int = 480) -> Scene:
    """One synthetic scene, a pure function of (seed, width, height)."""
    objects, background, rng = _layout(seed, width, height)
    return _render(objects, background, rng)


def generate_sequence(seed: int, n_frames: int, width: int = 640, height: int = 480) -> list[Scene]:
    """`n_frames` frames of one scene with every object drifting and turning smoothly.

    Frame 0 equals `generate_scene(seed, width, height)`. Instance ids are per frame (1..K in drawing
    order), as a segmenter would see them; objects that leave the image or become occluded drop out.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    objects, background, rng = _layout(seed, width, height)
    frames = []
    for frame in range(n_frames):
        for obj in objects:
            obj.center = obj.center + obj.velocity * (frame > 0)
            obj.angle += obj.spin * (frame > 0)
        frames.append(_render(objects, background, rng))
    return frames
