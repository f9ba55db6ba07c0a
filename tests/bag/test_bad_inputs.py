"""Broken input: one clear line naming the bag/topic, no traceback, and what was done is kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import stt_ros.commands.cli as cli
from stt_ros.bag.evaluate import EvalOptions, run_evaluation
from stt_ros.bag.reader import Bag, BagError
from stt_ros.bag.sample import GT_TOPIC, PROMPT_TOPIC, stamped_header, write_sample_bag
from stt_ros.bag.writer import BagWriter
from stt_ros.pipeline.conversions import MessageKit, image_message

from .conftest import FRAMES, copy_bag

MY_COMMANDS = ("stt_ros.commands.eval_bag", "stt_ros.commands.make_sample_bag")


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(cli, "COMMAND_MODULES", MY_COMMANDS)
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def evaluate(bag, out, predictors, **options):
    options.setdefault("image_topic", "/camera/image_raw")
    opts = EvalOptions(bag=bag, out=out, progress=False, **options)
    return run_evaluation(opts, predictors[0])


def storage_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_storage_file_is_one_clear_line(sample_bags, tmp_path, monkeypatch, capsys, storage, damage):
    bag = shutil.copytree(sample_bags[storage], tmp_path / "bag")
    path = storage_file(bag)
    data = path.read_bytes()
    # An MCAP file cut short keeps its complete chunks (test_salvage.py); this one is cut inside its only chunk.
    truncated = data[: 1000 if storage == "mcap" else len(data) // 2]
    path.write_bytes({"truncate": truncated, "garbage": bytes(range(256)) * 8, "empty": b""}[damage])
    code, err = run_cli(
        monkeypatch,
        capsys,
        "eval-bag",
        str(bag),
        "--image-topic",
        "/camera/image_raw",
        "--gt-topic",
        GT_TOPIC,
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(bag) in err and storage in err


@pytest.fixture
def interrupted_bag(tmp_path):
    """A 6-frame mcap bag (about 2 frames per chunk) cut at three quarters, as a killed recorder leaves it."""
    bag = write_sample_bag(tmp_path / "bag", "mcap", frames=6, width=320, height=240)
    path = storage_file(bag)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    return bag


def test_an_interrupted_recording_is_evaluated_up_to_its_last_complete_chunk(interrupted_bag, tmp_path, predictors):
    with pytest.warns(UserWarning, match="unfinished MCAP recording"):
        metrics = evaluate(interrupted_bag, tmp_path / "out", predictors, gt_topic=GT_TOPIC)
    assert metrics["run"]["status"] == "complete" and 0 < metrics["frames"] < 6
    assert metrics["input"]["counts"]["unfinished_recording"] == 1
    assert "unfinished recording: 1" in (tmp_path / "out" / "report.md").read_text()


def test_the_command_opens_and_salvages_the_bag_once(interrupted_bag, tmp_path, monkeypatch, capsys):
    import stt_ros.bag.reader as reader

    calls = []
    salvage = reader.salvage_mcap
    monkeypatch.setattr(reader, "salvage_mcap", lambda *args: calls.append(args) or salvage(*args))
    out = tmp_path / "out"
    argv = ["eval-bag", str(interrupted_bag), "--image-topic", "/camera/image_raw", "--gt-topic", GT_TOPIC]
    with pytest.warns(UserWarning, match="unfinished"):
        code, _ = run_cli(monkeypatch, capsys, *argv, "--out", str(out), "--device", "cpu", "--no-progress")
    assert code == 0 and len(calls) == 1
    assert json.loads((out / "metrics.json").read_text())["input"]["counts"]["unfinished_recording"] == 1


def test_missing_bag_and_topics(sample_bags, tmp_path, predictors):
    with pytest.raises(BagError, match="does not exist"):
        Bag(tmp_path / "nope")
    with pytest.raises(BagError, match=r"image topic /camera/nothing is not in bag .*/camera/image_raw"):
        evaluate(sample_bags["mcap"], tmp_path / "o1", predictors, gt_topic=GT_TOPIC, image_topic="/camera/nothing")
    with pytest.raises(BagError, match=r"prompt topic /camera/instances has type sensor_msgs/msg/Image"):
        evaluate(sample_bags["mcap"], tmp_path / "o2", predictors, prompt_topic=GT_TOPIC)
    with pytest.raises(BagError, match="--prompt-topic"):
        evaluate(sample_bags["mcap"], tmp_path / "o3", predictors)


def test_empty_bag(tmp_path, predictors):
    BagWriter(tmp_path / "empty").close()
    with pytest.raises(BagError, match="its topics: none"):
        evaluate(tmp_path / "empty", tmp_path / "out", predictors, gt_topic=GT_TOPIC)


def test_unsupported_encoding_names_topic(tmp_path, predictors):
    kit = MessageKit.rosbags()
    with BagWriter(tmp_path / "depth") as bag:
        depth = image_message(kit, stamped_header(1), np.zeros((4, 4), np.float32), "32FC1")
        bag.write("/camera/depth", depth, 1)
        bag.write(GT_TOPIC, depth, 1)
    with pytest.raises(BagError, match=r"image topic /camera/depth: encoding '32FC1' is not supported"):
        run_evaluation(
            EvalOptions(bag=tmp_path / "depth", out=tmp_path / "out", image_topic="/camera/depth", gt_topic=GT_TOPIC),
            predictors[0],
        )


def test_one_corrupt_message_is_skipped_and_counted(sample_bags, tmp_path, predictors):
    def corrupt(topic: str, index: int, raw: bytes) -> bytes:
        if topic == PROMPT_TOPIC and index == 3:
            return raw[:10]  # a PointPrompt cut short
        if topic == "/camera/image_raw" and index == 1:
            return raw[:100]  # an image cut short
        return raw

    bag = copy_bag(sample_bags["mcap"], tmp_path / "bag", corrupt)
    metrics = evaluate(bag, tmp_path / "out", predictors, prompt_topic=PROMPT_TOPIC, gt_topic=GT_TOPIC)
    assert metrics["run"]["status"] == "complete"
    assert metrics["input"]["counts"]["undecodable_messages"] == 2
    assert metrics["frames"] == FRAMES - 1
    assert "undecodable messages: 2" in (tmp_path / "out" / "report.md").read_text()


def test_failure_part_way_keeps_finished_frames(sample_bags, tmp_path, predictors, monkeypatch):
    read = Bag.read

    def failing_read(self, topics):
        for count, item in enumerate(read(self, topics)):
            if count == 5:  # two frames and their GT in: the storage "breaks"
                raise BagError("reading stopped: simulated truncation")
            yield item

    monkeypatch.setattr(Bag, "read", failing_read)
    with pytest.raises(BagError, match="simulated truncation"):
        evaluate(sample_bags["mcap"], tmp_path / "out", predictors, gt_topic=GT_TOPIC)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["run"]["status"].startswith("stopped early") and 0 < metrics["frames"] < FRAMES
    with Bag(tmp_path / "out" / "results") as results:
        assert results.counts["/stt/segmentations"] == metrics["frames_with_prompts"]


def test_interrupt_keeps_outputs(sample_bags, tmp_path, predictors):
    class Interrupting:
        calls = 0

        def predict(self, image, prompts):
            Interrupting.calls += 1
            if Interrupting.calls == 2:
                raise KeyboardInterrupt
            return predictors[0].predict(image, prompts)

    options = EvalOptions(
        bag=sample_bags["sqlite3"],
        out=tmp_path / "out",
        image_topic="/camera/image_raw",
        prompt_topic=PROMPT_TOPIC,
    )
    options.progress = False
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(options, Interrupting())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["run"]["status"].startswith("interrupted") and metrics["frames"] == 1
    with Bag(tmp_path / "out" / "results") as results:
        assert results.counts["/stt/segmentations"] == 1


def test_make_sample_bag_cli(tmp_path, monkeypatch, capsys):
    code, _ = run_cli(monkeypatch, capsys, "make-sample-bag", str(tmp_path / "s"), "--frames", "2", "--width", "64")
    assert code == 0
    with Bag(tmp_path / "s") as bag:
        assert bag.counts["/camera/image_raw/compressed"] == 2 and bag.counts[PROMPT_TOPIC] > 0
    code, err = run_cli(monkeypatch, capsys, "make-sample-bag", str(tmp_path / "s"))
    assert code == 2 and "already exists" in err
