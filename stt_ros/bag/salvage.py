"""Reading what an interrupted MCAP recording holds.

A recorder killed mid-write (power cut, OOM, Ctrl-C twice) leaves an MCAP file without its summary and
footer; `rosbags` reads only finished files. Every record is `opcode, u64 length, body`, so the complete
records at the front of such a file are intact. `salvage_mcap` copies them and closes the copy with a
data-end record and an empty-summary footer: a valid, unindexed MCAP that `rosbags` reads by scanning.
The original file is never modified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_DATA_END = 0x01, 0x02, 0x0F
OP_MESSAGE, OP_CHUNK = 0x05, 0x06
LAST_SPEC_OP = 0x10  # opcodes above this and below 0x80 are not MCAP: the bytes are not a record
RECORD_HEAD = struct.Struct("<BQ")
DATA_END = RECORD_HEAD.pack(OP_DATA_END, 4) + struct.pack("<I", 0)  # data section CRC 0: not computed
FOOTER = RECORD_HEAD.pack(OP_FOOTER, 20) + struct.pack("<QQI", 0, 0, 0) + MAGIC  # no summary section


@dataclass(frozen=True)
class Salvaged:
    """A finished copy of an unfinished MCAP file and how much of the original it keeps."""

    path: Path
    kept_bytes: int
    total_bytes: int
    records: int  # complete message and chunk records kept

    def describe(self, original: Path) -> str:
        return (
            f"{original} is an unfinished MCAP recording (no footer: the recorder was probably interrupted); "
            f"reading the {self.records} complete message/chunk records in its first {self.kept_bytes:,} of "
            f"{self.total_bytes:,} bytes, through a repaired copy. Messages after that point are lost"
        )


def complete_prefix(path: Path) -> tuple[int, int] | None:
    """(bytes, message/chunk records) of the complete records of an unfinished MCAP file.

    None when the file is finished (its trouble is something else), is not MCAP, or has no complete
    message or chunk record to keep.
    """
    size = path.stat().st_size
    with path.open("rb") as stream:
        if stream.read(len(MAGIC)) != MAGIC:
            return None
        stream.seek(-len(MAGIC), 2)
        if size >= 2 * len(MAGIC) and stream.read() == MAGIC:
            return None
        position, records = len(MAGIC), 0
        stream.seek(position)
        while position + RECORD_HEAD.size <= size:
            opcode, length = RECORD_HEAD.unpack(stream.read(RECORD_HEAD.size))
            end = position + RECORD_HEAD.size + length
            if end > size or opcode in (0, OP_FOOTER, OP_DATA_END) or LAST_SPEC_OP < opcode < 0x80:
                break
            if position == len(MAGIC) and opcode != OP_HEADER:
                return None
            records += opcode in (OP_MESSAGE, OP_CHUNK)
            position = end
            stream.seek(position)
    return (position, records) if records else None


def salvage_mcap(path: Path, directory: Path) -> Salvaged | None:
    """Copy the complete records of an unfinished MCAP file into `directory`, finished; None if not one."""
    prefix = complete_prefix(path)
    if prefix is None:
        return None
    kept, records = prefix
    target = directory / path.name
    with path.open("rb") as source, target.open("wb") as copy:
        remaining = kept
        while remaining:
            block = source.read(min(remaining, 1 << 20))
            if not block:
                raise OSError(f"{path} shrank while it was being copied")
            copy.write(block)
            remaining -= len(block)
        copy.write(DATA_END + FOOTER)
    return Salvaged(target, kept, path.stat().st_size, records)
