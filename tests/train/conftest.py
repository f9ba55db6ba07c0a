"""Training tests keep their teacher caches in a temporary folder, never in the user's ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
