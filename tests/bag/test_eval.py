"""Round trip: sample bag → eval-bag → results bag read back equals the predictor's own output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stt_ros.bag.evaluate import EvalOptions, gt_instance, gt_prompts, instances_from_message, run_evaluation
from stt_ros.bag.reader import Bag, Message
from stt_ros.bag.results import MASK_TOPIC, SEGMENTATIONS_TOPIC
from stt_ros.bag.sample import GT_TOPIC, IMAGE_TOPICS, PROMPT_TOPIC
from stt_ros.pipeline.binding import stamp_to_ns
from stt_ros.pipeline.conversions import (
    MessageKit,
    image_message,
    image_to_rgb,
    label_image,
    message_to_rgb,
    segmentation_to_mask,
)
from stt_ros.prompts import Prompt

from .conftest import FRAMES, HEIGHT, WIDTH


def evaluate(bag: Path, out: Path, predictors, **options) -> dict:
    fov, ref = predictors
    compare = options.pop("compare_sam", False)
    options.setdefault("image_topic", "/camera/image_raw")
    opts = EvalOptions(bag=bag, out=out, progress=False, **options)
    return run_evaluation(opts, fov, ref if compare else None)


def read_topic(bag: Path, topic: str) -> list[Message]:
    with Bag(bag) as reader:
        return [m for m in reader.read([topic]) if isinstance(m, Message)]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("timing", "run")}


def test_round_trip_matches_direct_prediction(sample_bags, predictors, tmp_path):
    bag = sample_bags["mcap"]
    metrics = evaluate(bag, tmp_path / "out", predictors, prompt_topic=PROMPT_TOPIC, gt_topic=GT_TOPIC)
    assert metrics["run"]["status"] == "complete"
    assert metrics["frames"] == FRAMES and metrics["input"]["counts"] == {}

    images = read_topic(bag, "/camera/image_raw")
    prompts_by_stamp: dict[int, list] = {}
    for message in read_topic(bag, PROMPT_TOPIC):
        prompts_by_stamp.setdefault(stamp_to_ns(message.msg.header.stamp), []).append(message.msg)
    arrays = read_topic(tmp_path / "out" / "results", SEGMENTATIONS_TOPIC)
    masks = read_topic(tmp_path / "out" / "results", MASK_TOPIC)
    assert len(arrays) == len(masks) == FRAMES
    for image, array, label in zip(images, arrays, masks, strict=True):
        # Same stamp, frame and receive time as the input: `ros2 bag play` lines them up.
        assert array.msg.header == image.msg.header == label.msg.header
        assert array.log_time == image.log_time == label.log_time
        sent = prompts_by_stamp[stamp_to_ns(image.msg.header.stamp)]
        assert [s.prompt_id for s in array.msg.segmentations] == [p.id for p in sent]
        prompts = [Prompt(points=[(p.points[0].x, p.points[0].y)], labels=[1], id=p.id) for p in sent]
        direct = predictors[0].predict(message_to_rgb(image.msg), prompts)
        for segmentation, result in zip(array.msg.segmentations, direct, strict=True):
            np.testing.assert_array_equal(segmentation_to_mask(segmentation, HEIGHT, WIDTH), result.mask)
            assert segmentation.score == pytest.approx(result.score) and segmentation.index == result.index
            assert not segmentation.tracked
        expected = label_image([r.mask for r in direct], HEIGHT, WIDTH)
        np.testing.assert_array_equal(image_to_rgb(label.msg)[:, :, 0], expected)


def test_deterministic_and_outputs_written(sample_bags, predictors, tmp_path):
    first = evaluate(sample_bags["mcap"], tmp_path / "a", predictors, gt_topic=GT_TOPIC, compare_sam=True)
    second = evaluate(sample_bags["mcap"], tmp_path / "b", predictors, gt_topic=GT_TOPIC, compare_sam=True)
    assert without_timing(first) == without_timing(second)
    assert first["iou"]["count"] == first["oracle_iou"]["count"] == first["sam_agreement"]["count"] > 0
    assert first["oracle_iou"]["mean"] >= first["iou"]["mean"]
    assert first["timing"]["frame_latency"]["p50_ms"] > 0 and "sam_frame_latency" in first["timing"]
    for name in (
        "metrics.json",
        "report.md",
        "prompts.jsonl",
        "iou_histogram.png",
        "latency.png",
        "timeline.png",
    ):
        assert (tmp_path / "a" / name).stat().st_size > 0
    rows = (tmp_path / "a" / "prompts.jsonl").read_text().splitlines()
    assert len(rows) == first["prompts"] and json.loads(rows[0])["prompt_id"].startswith("gt")
    assert "mIoU" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.parametrize("topic", list(IMAGE_TOPICS))
def test_every_storage_and_encoding(sample_bags, predictors, tmp_path, topic):
    for storage, bag in sample_bags.items():
        metrics = evaluate(bag, tmp_path / storage, predictors, image_topic=topic, prompt_topic=PROMPT_TOPIC, limit=2)
        assert metrics["frames"] == 2 and metrics["prompts"] > 0, storage
        assert metrics["run"]["storage"] == storage


def test_bare_storage_file_and_limit(sample_bags, predictors, tmp_path):
    (db3,) = sample_bags["sqlite3"].glob("*.db3")
    metrics = evaluate(db3, tmp_path / "out", predictors, prompt_topic=PROMPT_TOPIC, gt_topic=GT_TOPIC, limit=1)
    assert metrics["frames"] == 1 and metrics["input"]["counts"] == {}  # later frames' prompts are no problem


def test_ground_truth_helpers():
    instances = np.zeros((20, 30), np.uint16)
    instances[2:10, 3:12] = 1
    instances[12:19, 15:28] = 300
    msg = image_message(MessageKit.rosbags(), None, instances, "mono16")
    np.testing.assert_array_equal(instances_from_message(msg), instances)
    prompts = gt_prompts(instances)
    assert [p.id for p in prompts] == ["gt1", "gt300"]
    assert [gt_instance(p, instances) for p in prompts] == [1, 300]
    assert gt_instance(Prompt(points=[(0, 0)], labels=[1]), instances) == 0
    assert gt_instance(Prompt(box=(14, 11, 29, 19)), instances) == 300


def test_the_command_evaluates_the_configuration_it_is_given(sample_bags, tmp_path, capsys, monkeypatch):
    from stt_ros.commands.cli import main
    from stt_ros.predictor import FoveatedPredictor

    built = []
    build = FoveatedPredictor.build
    monkeypatch.setattr(FoveatedPredictor, "build", lambda *a, **k: built.append(k) or build(*a, **k))
    out = tmp_path / "out"
    argv = ["eval-bag", str(sample_bags["mcap"]), "--image-topic", "/camera/image_raw", "--gt-topic", GT_TOPIC]
    argv += ["--device", "cpu", "--no-progress", "--limit", "1"]
    chosen = ["--attention", "window", "--tokens", "pixel", "--no-proportional"]
    assert main([*argv, *chosen, "--out", str(out)]) == 0
    assert built == [{"attention": "window", "tokens": "pixel", "proportional": False}]  # the rest: the library's
    run = json.loads((out / "metrics.json").read_text())["run"]
    in_effect = ("stt", "window", "pixel", "False")  # the pattern no option set: the library's default
    assert (run["pattern"], run["attention"], run["tokens"], run["proportional"]) == in_effect
    report = (out / "report.md").read_text()
    assert "- foveation: pattern `stt`, window attention, pixel coarse tokens, proportional attention False" in report
    assert main([*argv, "--pattern", "1,2/4", "--out", str(tmp_path / "bad")]) == 2
    assert "strides and grids must have one entry per level" in capsys.readouterr().err


def test_depth_lifts_every_object_as_the_sample_geometry_says(sample_bags, predictors, tmp_path):
    """With the sample's aligned depth every mask becomes an object: detections, clouds and coverage per prompt."""
    from stt_ros.bag.results import DETECTIONS_TOPIC, OBJECTS_TOPIC, POINTS_TOPIC
    from stt_ros.bag.sample import CAMERA_INFO_TOPIC, DEPTH_TOPIC, TABLE_M, object_distance
    from stt_ros.pipeline.conversions import CLOUD_DTYPE

    out = tmp_path / "depth"
    metrics = evaluate(
        sample_bags["sqlite3"], out, predictors, gt_topic=GT_TOPIC, depth_topic=DEPTH_TOPIC,
        camera_info_topic=CAMERA_INFO_TOPIC,
    )  # fmt: skip
    assert metrics["input"]["counts"] == {}
    depth = metrics["depth"]
    assert depth["count"] == metrics["prompts"] > 0 and depth["topic"] == DEPTH_TOPIC
    assert 0.0 < depth["mean_coverage"] <= 1.0
    assert "objects lifted to 3-D" in (out / "report.md").read_text()
    rows = [json.loads(row) for row in (out / "prompts.jsonl").read_text().splitlines()]
    assert all(row["depth_coverage"] is not None for row in rows)
    arrays = read_topic(out / "results", OBJECTS_TOPIC)
    clouds = read_topic(out / "results", POINTS_TOPIC)
    boxes = read_topic(out / "results", DETECTIONS_TOPIC)
    assert len(arrays) == len(clouds) == len(boxes) == FRAMES
    for array, cloud in zip(arrays, clouds, strict=True):
        points = np.frombuffer(bytes(cloud.msg.data), dtype=CLOUD_DTYPE)
        assert cloud.msg.header == array.msg.header and len(points) == cloud.msg.width
        for index, detection in enumerate(array.msg.detections):
            mine = points[points["id"] == index + 1]
            assert len(mine) > 0
            assert np.median(mine["z"]) == pytest.approx(detection.results[0].pose.pose.position.z, abs=1e-3)
            # Every point lies between the nearest object top (0.3 m above the table) and the table.
            nearest = min(object_distance(k) for k in range(1, 6))
            assert mine["z"].min() >= nearest - 1e-3 and mine["z"].max() <= TABLE_M + 1e-3


def test_depth_needs_its_camera_info(sample_bags, predictors, tmp_path):
    from stt_ros.bag.reader import BagError
    from stt_ros.bag.sample import DEPTH_TOPIC

    with pytest.raises(BagError, match=r"--camera-info-topic.*CameraInfo topics in the bag: /camera/"):
        evaluate(sample_bags["mcap"], tmp_path / "x", predictors, gt_topic=GT_TOPIC, depth_topic=DEPTH_TOPIC)
