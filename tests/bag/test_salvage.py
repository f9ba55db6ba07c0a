"""An interrupted MCAP recording is read up to its last complete record; the original is never touched."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from stt_ros.bag.reader import Bag, BagError
from stt_ros.bag.salvage import salvage_mcap
from stt_ros.bag.writer import BAG_VERSION

MESSAGES = 12
PAYLOAD = 400_000  # bytes per message: rosbags closes a chunk past 1 MiB, so 3 messages per chunk


@pytest.fixture(scope="module")
def chunked_mcap(tmp_path_factory) -> Path:
    """An MCAP bag of 12 large std_msgs/String messages in 4 chunks."""
    from stt_ros.bag.messages import typestore

    store = typestore()
    String = store.types["std_msgs/msg/String"]
    bag = tmp_path_factory.mktemp("chunked") / "bag"
    writer = Writer(bag, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
    for index in range(MESSAGES):
        text = chr(ord("a") + index) * PAYLOAD
        writer.write(connection, 1_000 + index, store.serialize_cdr(String(data=text), "std_msgs/msg/String"))
    writer.close()
    return next(bag.glob("*.mcap"))


def _messages(path: Path) -> list[tuple[int, bytes]]:
    with Reader(path) as reader:
        return [(timestamp, bytes(raw)) for _, timestamp, raw in reader.messages()]


def _cut(original: Path, directory: Path, length: int) -> Path:
    cut = directory / original.name
    cut.write_bytes(original.read_bytes()[:length])
    return cut


@settings(max_examples=25, deadline=None)
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_a_cut_recording_yields_exactly_its_complete_messages(chunked_mcap, tmp_path_factory, fraction):
    full = _messages(chunked_mcap)
    directory = tmp_path_factory.mktemp("cut")
    cut = _cut(chunked_mcap, directory, int(fraction * chunked_mcap.stat().st_size))
    (directory / "out").mkdir()
    salvaged = salvage_mcap(cut, directory / "out")
    if salvaged is None:  # the cut falls in the header or the first chunk: nothing complete to keep
        assert fraction < 1 / 4
        return
    kept = _messages(salvaged.path)
    assert kept == full[: len(kept)] and len(kept) % 3 == 0 and kept  # whole chunks, in order, unchanged
    assert salvaged.kept_bytes <= cut.stat().st_size == salvaged.total_bytes
    assert salvaged.records == len(kept) // 3


def test_only_the_summary_lost_keeps_every_message(chunked_mcap, tmp_path):
    cut = _cut(chunked_mcap, tmp_path, chunked_mcap.stat().st_size - 1)
    with pytest.warns(UserWarning, match="unfinished MCAP recording.*4 complete message/chunk records"):
        bag = Bag(cut)
    with bag:
        assert [item.log_time for item in bag.read({"/chatter"})] == [t for t, _ in _messages(chunked_mcap)]
        assert bag.counts == {"/chatter": MESSAGES} and str(cut) in bag.salvaged
    assert cut.stat().st_size == chunked_mcap.stat().st_size - 1  # the original is left as it was


def test_finished_and_foreign_files_are_not_salvaged(chunked_mcap, tmp_path):
    assert salvage_mcap(chunked_mcap, tmp_path) is None
    foreign = tmp_path / "notes.mcap"
    foreign.write_bytes(b"not a recording at all" * 100)
    assert salvage_mcap(foreign, tmp_path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Bag(chunked_mcap.parent) as bag:
            assert bag.salvaged is None


def test_a_bag_directory_is_salvaged_through_a_scratch_copy_that_goes_with_it(chunked_mcap, tmp_path, monkeypatch):
    shutil.copytree(chunked_mcap.parent, tmp_path / "bag")  # with its metadata.yaml
    storage = tmp_path / "bag" / chunked_mcap.name
    storage.write_bytes(storage.read_bytes()[:-100])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.warns(UserWarning, match="unfinished"), Bag(tmp_path / "bag") as bag:
        assert bag.counts == {"/chatter": MESSAGES} and any(scratch.iterdir())
    assert not any(scratch.iterdir())


def test_a_cut_inside_the_first_chunk_is_the_clear_error_and_leaves_no_scratch(chunked_mcap, tmp_path, monkeypatch):
    cut = _cut(chunked_mcap, tmp_path, 1000)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(BagError, match="mcap recover"):
        Bag(cut)
    assert not any(scratch.iterdir())
