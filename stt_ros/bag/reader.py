"""Reading ROS 2 bags (sqlite3 and mcap) with `rosbags`, turning every storage failure into one clear line.

Bags come from robots: recordings get killed mid-write, copied half-way, or lose their metadata.yaml.
`Bag` accepts a bag directory, its metadata.yaml or a bare .db3/.mcap file, names the bag and topic in
every error, and reports one undecodable message as `Skipped` instead of ending the run. An MCAP file
left unfinished by an interrupted recorder is read up to its last complete record (`salvage`), loudly.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_types_from_idl, get_types_from_msg
from rosbags.typesys.store import Typestore

from stt_ros.bag.messages import typestore
from stt_ros.bag.salvage import salvage_mcap
from stt_ros.errors import UserError

STORAGE_SUFFIXES = {".db3": "sqlite3", ".mcap": "mcap"}
REPAIR_HINTS = {
    "sqlite3": "if the recording was interrupted, try `ros2 bag reindex BAG_DIR sqlite3`",
    "mcap": "if the recording was interrupted, try `mcap recover IN.mcap -o OUT.mcap` (mcap CLI)",
}


class BagError(UserError):
    """The bag cannot be read (missing, corrupt, truncated, wrong topic); says what to do next."""


@dataclass(frozen=True)
class Message:
    """One deserialized message; `log_time` is the bag's receive time in ns (not the header stamp)."""

    topic: str
    msgtype: str
    log_time: int
    msg: Any


@dataclass(frozen=True)
class Skipped:
    """A message that could not be decoded; the run goes on without it and reports it."""

    topic: str
    log_time: int
    reason: str


def resolve_bag_path(path: str | Path) -> tuple[Path, str]:
    """The path `rosbags` should open and its storage ("sqlite3" or "mcap").

    A directory without metadata.yaml (lost when a recorder is killed) is read through its single
    storage file, which holds everything needed.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.name == "metadata.yaml":
        path = path.parent
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if (path / "metadata.yaml").is_file():
            storage = _storage_from_metadata(path / "metadata.yaml")
            return path, storage
        if len(files) == 1:
            return files[0], STORAGE_SUFFIXES[files[0].suffix]
        if not files:
            raise BagError(f"{path} is not a ROS 2 bag: no metadata.yaml, .db3 or .mcap file in it")
        raise BagError(
            f"{path} has {len(files)} storage files but no metadata.yaml; "
            "run `ros2 bag reindex` on it, or pass one of the files"
        )
    if path.suffix == ".bag":
        raise BagError(f"{path} is a ROS 1 bag; convert it first: `rosbags-convert --src {path}`")
    if path.suffix not in STORAGE_SUFFIXES:
        raise BagError(f"{path}: not a ROS 2 bag (expected a bag directory, a .db3 or a .mcap file)")
    if path.stat().st_size == 0:
        raise BagError(f"bag file {path} is empty (0 bytes)")
    return path, STORAGE_SUFFIXES[path.suffix]


def _storage_from_metadata(metadata: Path) -> str:
    """The storage named in metadata.yaml, read loosely: `rosbags` reports a broken file in detail later."""
    for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.strip().partition(":")
        if key == "storage_identifier":
            return value.strip().strip("'\"")
    return "unknown"


def _opened(path: Path) -> Reader:
    reader = Reader(path)
    reader.open()
    return reader


class Bag:
    """An open rosbag2 bag: its topics, and its messages deserialized in receive-time order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source, self.storage = resolve_bag_path(path)
        self._store: Typestore = typestore()
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.salvaged: str | None = None  # what was kept of an unfinished recording, when it was one
        try:
            self._reader = self._open(self.source)
        except Exception as error:  # rosbags raises ReaderError, KeyError, apsw and zstd errors alike
            if self._scratch is not None:
                self._scratch.cleanup()
            raise BagError(self._describe(error, "cannot open")) from None
        self.connections: list[Connection] = list(self._reader.connections)
        self.topics: dict[str, str] = {c.topic: c.msgtype for c in self.connections}
        self.counts: dict[str, int] = {}
        for connection in self.connections:
            self.counts[connection.topic] = self.counts.get(connection.topic, 0) + connection.msgcount
        self._register_missing_types()

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def _open(self, source: Path) -> Reader:
        """Open `source`, else its one storage file (a broken metadata.yaml), else a salvaged unfinished MCAP."""
        try:
            return _opened(source)
        except Exception:
            files = [source] if source.is_file() else [p for p in source.iterdir() if p.suffix in STORAGE_SUFFIXES]
            if len(files) != 1:
                raise
            self.source, self.storage = files[0], STORAGE_SUFFIXES[files[0].suffix]
            salvaged = self._salvage(files[0]) if self.storage == "mcap" else None
            if salvaged is not None:
                return _opened(salvaged)
            if files[0] == source:
                raise
            return _opened(files[0])

    def _salvage(self, original: Path) -> Path | None:
        """A finished copy of the complete records of an unfinished MCAP file; None if it is not one."""
        self._scratch = tempfile.TemporaryDirectory(prefix="stt_salvage_")
        salvaged = salvage_mcap(original, Path(self._scratch.name))
        if salvaged is None:
            self._scratch.cleanup()
            self._scratch = None
            return None
        self.salvaged = salvaged.describe(original)
        warnings.warn(self.salvaged, UserWarning, stacklevel=4)
        return salvaged.path

    def _describe(self, error: BaseException, what: str) -> str:
        detail = " ".join(str(error).split()).rstrip(".") or type(error).__name__
        hint = REPAIR_HINTS.get(self.storage, "check that it is a complete ROS 2 bag")
        return f"{what} bag {self.path} ({self.storage}): {detail}; it may be truncated or corrupt: {hint}"

    def _register_missing_types(self) -> None:
        """Teach the typestore the types the bag defines but it lacks (vision_msgs, custom messages).

        Only names the store does not hold yet are added, so our own definitions always win.
        """
        for connection in self.connections:
            if connection.msgtype in self._store.types or not connection.msgdef.data:
                continue
            try:
                if connection.msgdef.format == MessageDefinitionFormat.MSG:
                    types = get_types_from_msg(connection.msgdef.data, connection.msgtype)
                else:
                    separator = "=" * 80 + "\n"
                    types = {}
                    for block in connection.msgdef.data.split(separator):
                        if block.startswith("IDL: "):
                            types.update(get_types_from_idl(block.split("\n", 1)[1]))
                        elif block.strip():
                            types.update(get_types_from_idl(block))
            except Exception:  # an unparsable definition only matters if that topic is used; see require()
                continue
            self._store.register({name: t for name, t in types.items() if name not in self._store.types})

    def require(self, topic: str, accepted: Collection[str], role: str) -> str:
        """The message type of `topic`, checked to be one of `accepted`; raises BagError naming both."""
        if topic not in self.topics:
            listing = ", ".join(f"{t} [{m}]" for t, m in sorted(self.topics.items())) or "none"
            raise BagError(f"{role} topic {topic} is not in bag {self.path}; its topics: {listing}")
        msgtype = self.topics[topic]
        if msgtype not in accepted:
            raise BagError(f"{role} topic {topic} has type {msgtype}; expected one of: {', '.join(sorted(accepted))}")
        if msgtype not in self._store.types:
            raise BagError(f"topic {topic}: type {msgtype} is unknown and the bag carries no definition for it")
        if self.counts.get(topic, 0) == 0:
            raise BagError(f"{role} topic {topic} in bag {self.path} has no messages")
        return msgtype

    def read(self, topics: Collection[str]) -> Iterator[Message | Skipped]:
        """Messages of `topics` in receive-time order; undecodable ones come out as `Skipped`.

        A storage failure part-way (a truncated file) raises BagError after the good messages before it.
        """
        connections = [c for c in self.connections if c.topic in topics]
        if not connections:
            return
        stream = self._reader.messages(connections=connections)
        last = "the first message"
        while True:
            try:
                connection, log_time, raw = next(stream)
            except StopIteration:
                return
            except Exception as error:  # storage layer: apsw, zstd, struct and ReaderError alike
                raise BagError(self._describe(error, f"reading stopped after {last} of")) from None
            last = f"{connection.topic} at t={log_time} ns"
            try:
                msg = self._store.deserialize_cdr(raw, connection.msgtype)
            except Exception as error:  # arbitrary bytes can fail anywhere inside the deserializer
                yield Skipped(connection.topic, log_time, f"cannot deserialize {connection.msgtype}: {error}")
                continue
            yield Message(connection.topic, connection.msgtype, log_time, msg)
