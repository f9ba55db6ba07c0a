"""Writing rosbag2 bags with our typestore, always finalised: an interrupted run leaves a playable bag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from stt_ros.bag.messages import typestore
from stt_ros.errors import UserError

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# rosbag2 metadata version 8 (Jazzy's); readable by rosbag2 and by every rosbags release that writes bags.
BAG_VERSION = 8


class BagWriter:
    """A rosbag2 bag being written; topics are added on first use, so the type is fixed by the message."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise UserError(f"unknown bag storage {storage!r}; use one of: {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise UserError(f"{self.path} already exists; remove it or choose another output path")
        self._store = typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, Connection] = {}
        self.count = 0

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, topic: str, msg: Any, log_time_ns: int) -> None:
        """Serialize `msg` (a typestore dataclass) onto `topic` at receive time `log_time_ns`."""
        msgtype = msg.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=self._store)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise ValueError(f"topic {topic} holds {connection.msgtype}, cannot add a {msgtype}")
        self._writer.write(connection, int(log_time_ns), self._store.serialize_cdr(msg, msgtype))
        self.count += 1

    def close(self) -> None:
        """Write the index and metadata.yaml; safe to call twice, and after a failed run."""
        if self._writer.storage is not None:
            self._writer.close()
