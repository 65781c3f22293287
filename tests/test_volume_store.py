import numpy as np

from engine.volume import Volume
from ui.volumes import VolumeStore


def test_store_reads_each_volume_once_and_evicts_least_recent():
    def load(name):
        return Volume(hu=np.full((8, 8, 8), float(len(name)), dtype=np.float32), spacing_mm=(1, 1, 1), source=name)

    store = VolumeStore(load, capacity=2)
    for _ in range(5):
        assert store.get("a").source == "a"
    assert store.loads == 1
    store.get("bb")
    store.get("a")  # a becomes most recent
    store.get("ccc")  # evicts bb
    assert store.loads == 3
    store.get("a")
    assert store.loads == 3
    store.get("bb")
    assert store.loads == 4
