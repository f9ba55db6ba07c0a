"""Small sample bags (both storages) and a tiny-SAM predictor pair for the bag tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from stt_ros.bag.sample import write_sample_bag
from stt_ros.bag.writer import BAG_VERSION

FRAMES = 4
WIDTH, HEIGHT = 96, 72


@pytest.fixture(scope="session")
def sample_bags(tmp_path_factory) -> dict[str, Path]:
    """The sample bag in each storage: 4 frames of 96x72, every encoding, GT and prompts."""
    root = tmp_path_factory.mktemp("bags")
    return {
        storage: write_sample_bag(root / storage, storage, frames=FRAMES, width=WIDTH, height=HEIGHT)
        for storage in ("mcap", "sqlite3")
    }


@pytest.fixture(scope="session")
def predictors(tiny):
    """The foveated predictor and stock SAM on the same tiny random weights."""
    from stt_ros.predictor import FoveatedPredictor, ReferencePredictor

    return FoveatedPredictor(tiny), ReferencePredictor(tiny)


def copy_bag(src: Path, dst: Path, mutate: Callable[[str, int, bytes], bytes | None]) -> Path:
    """Copy a bag message by message; `mutate(topic, index_on_topic, raw)` gives new bytes, or None: drop."""
    seen: dict[str, int] = {}
    with Reader(src) as reader:
        storage = StoragePlugin.MCAP if any(src.glob("*.mcap")) else StoragePlugin.SQLITE3
        writer = Writer(dst, version=BAG_VERSION, storage_plugin=storage)
        writer.open()
        out = {
            c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
            for c in reader.connections
        }
        for connection, timestamp, raw in reader.messages():
            index = seen.get(connection.topic, 0)
            seen[connection.topic] = index + 1
            data = mutate(connection.topic, index, raw)
            if data is not None:
                writer.write(out[connection.id], timestamp, data)
        writer.close()
    return dst
