"""Tracks: keep segmenting an object on every new frame from where its mask was last seen.

Each new frame re-prompts a track with one foreground point: the pixel of its previous mask farthest
from the boundary (SAM's own single-point protocol), which stays on the object under small motion.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stt_ros.masks import interior_point
from stt_ros.prompts import Prompt

ENDED_BY_CALLER = "ended by the caller"
ENDED_LOW_SCORE = "score below threshold"
ENDED_VANISHED = "mask vanished"
ENDED_EVICTED = "evicted: too many tracks"


@dataclass
class Track:
    """One tracked object: the last mask it had and the frame stamp it had it on."""

    track_id: str
    mask: np.ndarray
    score: float
    stamp_ns: int
    updates: int = 0


@dataclass
class TrackStats:
    started: int = 0
    ended: dict[str, int] = field(default_factory=dict)


class Tracker:
    """At most `max_tracks` tracks (starting one more ends the oldest); ended by score, area or caller."""

    def __init__(self, max_tracks: int = 8, min_score: float = 0.5, min_area: int = 16) -> None:
        if max_tracks < 1:
            raise ValueError(f"max_tracks must be at least 1, got {max_tracks}")
        self.max_tracks = max_tracks
        self.min_score = min_score
        self.min_area = min_area
        self.tracks: OrderedDict[str, Track] = OrderedDict()
        self.stats = TrackStats()

    def __len__(self) -> int:
        return len(self.tracks)

    def _end(self, track_id: str, reason: str) -> tuple[str, str]:
        del self.tracks[track_id]
        self.stats.ended[reason] = self.stats.ended.get(reason, 0) + 1
        return track_id, reason

    def _failure(self, result: Any) -> str | None:
        if float(result.score) < self.min_score:
            return ENDED_LOW_SCORE
        if int(np.count_nonzero(result.mask)) < self.min_area:
            return ENDED_VANISHED
        return None

    def prompts(self, stamp_ns: int, exclude: set[str] = frozenset()) -> list[Prompt]:
        """One single-point prompt per track older than `stamp_ns` (ids in `exclude` have new prompts)."""
        prompts = []
        for track in self.tracks.values():
            if track.track_id in exclude or track.stamp_ns >= stamp_ns:
                continue
            point = interior_point(track.mask)
            if point is not None:
                prompts.append(Prompt(points=[point], labels=[1], id=track.track_id))
        return prompts

    def start(self, track_id: str, result: Any, stamp_ns: int) -> list[tuple[str, str]]:
        """Start (or restart) a track from a prompted result. Returns the tracks ended, with reasons.

        A result that would end a track at once (low score, tiny mask) does not start one.
        """
        ended = []
        if track_id in self.tracks:
            del self.tracks[track_id]
        reason = self._failure(result)
        if reason is not None:
            self.stats.ended[reason] = self.stats.ended.get(reason, 0) + 1
            return [(track_id, reason)]
        while len(self.tracks) >= self.max_tracks:
            ended.append(self._end(next(iter(self.tracks)), ENDED_EVICTED))
        mask = np.asarray(result.mask, dtype=bool)
        self.tracks[track_id] = Track(track_id, mask, float(result.score), stamp_ns)
        self.stats.started += 1
        return ended

    def update(self, track_id: str, result: Any, stamp_ns: int) -> str | None:
        """Take a tracking result; returns the reason the track ended, or None while it lives on."""
        track = self.tracks.get(track_id)
        if track is None:
            return None
        reason = self._failure(result)
        if reason is not None:
            return self._end(track_id, reason)[1]
        track.mask = np.asarray(result.mask, dtype=bool)
        track.score = float(result.score)
        track.stamp_ns = stamp_ns
        track.updates += 1
        return None

    def end(self, track_id: str) -> bool:
        """The caller ends a track; False if there was none by that id."""
        if track_id not in self.tracks:
            return False
        self._end(track_id, ENDED_BY_CALLER)
        return True

    def clear(self) -> None:
        self.tracks.clear()
