"""Evidence overlays as the viewers use them: a finding's map for a case (computed on demand by
engine.evidence_cache, kept on disk under RAD3D_HOME/evidence and the last few in memory) and the
crosshair that jumps to its peak. No toolkit here: the server-rendered viewer and the WebGL one
both take `Overlay.volume_map` (float32 (X, Y, Z) in [0, 1] on the case's grid) and `Overlay.peak`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from engine.evidence_cache import EvidenceCache, Overlay, evidence_for
from engine.home import rad3d_home
from ui.viewer import Crosshair


class EvidenceOverlays:
    """Overlays per (run, case, owner, finding). `browser` is a ui.cases.CaseBrowser (its loaded
    runs and volumes are reused)."""

    def __init__(self, browser, cache_root: str | Path | None = None, keep: int = 6):
        self.browser = browser
        self.cache = EvidenceCache(cache_root or rad3d_home() / "evidence")
        self.keep = keep
        self._shown: OrderedDict[tuple, Overlay] = OrderedDict()
        self._lock = threading.Lock()

    def shown(self, run_name: str, case: str, owner: str, finding: str) -> Overlay | None:
        """The overlay if it was computed in this process (what a slice change redraws; never computes)."""
        with self._lock:
            return self._shown.get((run_name, case, owner, finding))

    def compute(self, run_name: str, case: str, owner: str, finding: str) -> Overlay:
        """The overlay, from memory, the disk cache or computed through the run's image model."""
        found = self.shown(run_name, case, owner, finding)
        if found is not None:
            return found
        model = self.browser.session(run_name).image
        overlay = evidence_for(model, self.browser.volume(case, owner), finding, self.cache)
        with self._lock:
            self._shown[(run_name, case, owner, finding)] = overlay
            while len(self._shown) > self.keep:
                self._shown.popitem(last=False)
        return overlay

    def jump(self, run_name: str, case: str, owner: str, finding: str) -> Crosshair:
        """The crosshair at the finding's peak evidence (the slice of maximum evidence in each plane):
        what "jump to evidence" and a click on a finding in the report move the viewer to."""
        return Crosshair(*self.compute(run_name, case, owner, finding).peak)
