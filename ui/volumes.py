"""Volumes the app has read, kept in memory so that moving a slider slices a cached array and
never rereads the file."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from engine.volume import Volume


class VolumeStore:
    def __init__(self, loader: Callable[[str], Volume], capacity: int = 4):
        self._loader = loader
        self._capacity = capacity
        self._volumes: OrderedDict[str, Volume] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how often a file was read (tests check slicing never reads)

    def get(self, key: str) -> Volume:
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return self._volumes[key]
        volume = self._loader(key)
        with self._lock:
            self.loads += 1
            # read twice at once (a page's first events): every caller gets the first array kept, so the
            # WebGL viewer's file, named per array, stays the one the page has
            volume = self._volumes.setdefault(key, volume)
            while len(self._volumes) > self._capacity:
                self._volumes.popitem(last=False)
        return volume

    def put(self, key: str, volume: Volume) -> None:
        with self._lock:
            self._volumes[key] = volume
            self._volumes.move_to_end(key)
            while len(self._volumes) > self._capacity:
                self._volumes.popitem(last=False)
