"""Training images for `stt train`: an image folder, a COCO-style annotation file, a ROS 2 bag topic, or
synthetic scenes.

Distillation needs only images; ground-truth masks (COCO, synthetic scenes) enable supervised training
and mIoU against ground truth. Every source is an indexable list of samples, so training can split,
shard (DDP) and shuffle it by index, deterministically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stt_ros.errors import UserError
from stt_ros.evaluation.scenes import generate_scene

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SYNTHETIC = "synthetic"
# Disjoint from the reference model's training seeds (< 10**12) and evaluation.heldout_scenes (10**12 + i).
SYNTHETIC_SEED_BASE = 5 * 10**12
SYNTHETIC_SIZES = ((640, 480), (1280, 720), (800, 600))


@dataclass(frozen=True)
class Sample:
    """One RGB uint8 image and, when labelled, its instance masks (HxW bool each)."""

    name: str
    image: np.ndarray
    gt: tuple[np.ndarray, ...] | None = None

    def masks(self) -> list[np.ndarray]:
        """Ground-truth masks, so a sample can stand in for a `Scene` in `evaluation.evaluate`."""
        return list(self.gt or ())


class Source:
    """An indexable set of training images; `labelled` says whether samples carry ground-truth masks."""

    labelled = False

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError


def read_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 RGB uint8 (grey and alpha images converted)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read image {path} (unsupported or corrupt file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class FolderSource(Source):
    """Every image file under a folder (recursively), in sorted order; for distillation."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"data folder {folder} does not exist")
        self.paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise UserError(f"no images found in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        return Sample(self.paths[index].name, read_rgb(self.paths[index]))


def decode_rle(counts: str | list[int], height: int, width: int) -> np.ndarray:
    """A COCO run-length encoding (a list of runs, or COCO's compressed string) as an HxW bool mask.

    Runs alternate 0s and 1s, start with 0s and walk the image column by column (Fortran order).
    """
    if isinstance(counts, str):
        counts = _rle_string_to_counts(counts)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, but the image has {height}x{width}")
    return flat.reshape((width, height)).T


def _rle_string_to_counts(text: str) -> list[int]:
    """COCO's compressed RLE string: 5-bit groups in chars from '0', sign-extended, delta to the run two back."""
    counts: list[int] = []
    position = 0
    data = text.encode("ascii")
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            chunk = data[position] - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def annotation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """An annotation's `segmentation` (polygons or RLE) as an HxW bool mask."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size", [height, width])
        return decode_rle(segmentation["counts"], int(size[0]), int(size[1]))
    mask = np.zeros((height, width), np.uint8)
    polygons = [
        np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32) for p in segmentation if len(p) >= 6
    ]
    cv2.fillPoly(mask, polygons, 1)
    return mask.astype(bool)


class CocoSource(Source):
    """Images and instance masks from a COCO-style annotation JSON; images are found under `image_root`.

    Images without usable annotations are skipped: supervised training needs at least one mask per image.
    """

    labelled = True

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None) -> None:
        annotations = Path(annotations)
        try:
            data = json.loads(annotations.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read COCO annotation file {annotations}: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"{annotations} is not a COCO annotation file (no 'images' list)")
        self.root = Path(image_root) if image_root else annotations.parent
        by_image: dict[int, list] = {}
        for annotation in data.get("annotations", []):
            if annotation.get("segmentation"):
                by_image.setdefault(annotation["image_id"], []).append(annotation["segmentation"])
        self.images = [image for image in data["images"] if by_image.get(image["id"])]
        self.segmentations = by_image
        if not self.images:
            raise UserError(f"{annotations} has no image with a segmentation annotation")
        missing = [image["file_name"] for image in self.images if not (self.root / image["file_name"]).is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} images of {annotations} are missing under {self.root} (e.g. {missing[0]}); "
                "pass --image-root"
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        entry = self.images[index]
        image = read_rgb(self.root / entry["file_name"])
        height, width = image.shape[:2]
        masks = [annotation_mask(s, height, width) for s in self.segmentations[entry["id"]]]
        for mask in masks:
            if mask.shape != (height, width):
                raise UserError(f"a mask of {entry['file_name']} is {mask.shape}, the image {height}x{width}")
        return Sample(entry["file_name"], image, tuple(m for m in masks if m.any()))


class BagSource(Source):
    """Frames of one image topic of a ROS 2 bag, evenly subsampled to at most `max_images`, held in memory."""

    def __init__(self, bag: str | Path, topic: str, max_images: int = 500) -> None:
        from stt_ros.bag.reader import Bag, Message
        from stt_ros.pipeline.conversions import message_to_rgb

        if not topic:
            raise UserError(f"{bag} is a ROS 2 bag: name its image topic with --image-topic")
        with Bag(bag) as reader:
            reader.require(topic, ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"), "image")
            total = reader.counts[topic]
            keep = set(np.linspace(0, total - 1, min(total, max_images)).round().astype(int).tolist())
            self.frames: list[Sample] = []
            for index, message in enumerate(reader.read([topic])):
                if index in keep and isinstance(message, Message):
                    self.frames.append(Sample(f"{topic}@{message.log_time}", message_to_rgb(message.msg)))
        if not self.frames:
            raise UserError(f"no decodable image on {topic} in {bag}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Sample:
        return self.frames[index]


class SyntheticSource(Source):
    """`count` synthetic scenes with instance masks, so `stt train` works without any data."""

    labelled = True

    def __init__(self, count: int = 200, seed: int = 0) -> None:
        if count < 1:
            raise UserError(f"synthetic data needs at least one image, got {count}")
        self.count, self.seed = count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        width, height = SYNTHETIC_SIZES[index % len(SYNTHETIC_SIZES)]
        scene = generate_scene(SYNTHETIC_SEED_BASE + self.seed * 10**6 + index, width, height)
        return Sample(f"scene{index}", scene.image, tuple(scene.masks()))


def open_source(
    data: str,
    image_topic: str | None = None,
    image_root: str | None = None,
    max_images: int = 500,
    synthetic_count: int = 200,
    seed: int = 0,
) -> Source:
    """The source `data` names: "synthetic", a COCO .json, a bag (directory, .db3, .mcap) or an image folder."""
    if data == SYNTHETIC:
        return SyntheticSource(synthetic_count, seed)
    path = Path(data)
    if not path.exists():
        raise UserError(f"training data {path} does not exist (expected an image folder, COCO .json or ROS 2 bag)")
    if path.suffix.lower() == ".json":
        return CocoSource(path, image_root)
    is_bag = path.suffix in (".db3", ".mcap") or (path.is_dir() and (path / "metadata.yaml").is_file())
    if is_bag or image_topic:
        return BagSource(path, image_topic or "", max_images)
    return FolderSource(path)
