"""Time and peak memory to refuse hostile inputs (issue #15): a ~1 MB zip holding 1 GiB of zeros, a
zip of 100,000 tiny members and a NIfTI whose header claims 2000³ voxels, each read once by
today's bounded reader (`engine.io.load_volume`) and once by the unbounded path it replaced (every
zip member read whole and handed to pydicom; nibabel's load + get_fdata), in the same run.

Each read runs in a fresh subprocess under an address-space cap (--cap-gib) and a time limit
(--timeout-s), so the unbounded path cannot take the machine down; peak memory is the child's
VmHWM (resident high-water mark, imports included), polled by this process.

    python3 bench/bounded_input.py            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, time, zipfile
cap, mode, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.path.insert(0, sys.argv[4])
import numpy, pydicom, nibabel  # imports before the clock: both paths pay them
from engine.io import load_volume
from engine.errors import VolumeError

def unbounded_zip(p):
    # the replaced reader: each member read whole into memory, then parsed
    with zipfile.ZipFile(p) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            try:
                pydicom.dcmread(__import__("io").BytesIO(data))
            except Exception:
                pass
    raise RuntimeError("read every member; no volume")

def unbounded_nifti(p):
    img = nibabel.load(p)
    return img.get_fdata(dtype=numpy.float32)

start = time.perf_counter()
try:
    if mode == "bounded":
        load_volume(path)
        outcome = "accepted"
    elif path.endswith(".zip"):
        unbounded_zip(path)
        outcome = "no refusal"
    else:
        unbounded_nifti(path)
        outcome = "no refusal"
except VolumeError as err:
    outcome = "refused: " + str(err).replace(path, "<file>")
except MemoryError:
    outcome = "MemoryError (traceback)"
except Exception as err:
    outcome = f"{type(err).__name__}: {str(err)[:80]}"
print(json.dumps({"seconds": time.perf_counter() - start, "outcome": outcome}))
"""


def _peak_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(mode: str, path: Path, cap_gib: float, timeout_s: float) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(int(cap_gib * 2**30)), mode, str(path), str(ROOT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _peak_mib(proc.pid) or 0.0)
        if time.perf_counter() - start > timeout_s:
            proc.kill()
            proc.wait()
            return {"seconds": None, "outcome": f"still running after {timeout_s:g} s (killed)", "peak_mib": peak}
        time.sleep(0.02)
    out, err = proc.communicate()
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"seconds": None, "outcome": f"crashed: {(err.strip().splitlines() or ['?'])[-1][:80]}"}
    result["peak_mib"] = peak
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap-gib", type=float, default=4.0, help="address-space cap of each child (GiB)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="time limit of each child (s)")
    args = parser.parse_args(argv)

    from hostile_inputs import absurd_nifti, many_members, zeros_bomb

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [
            ("zip, 1 GiB of zeros in one member", zeros_bomb(tmp / "zeros.zip")),
            ("zip, 100,000 tiny members", many_members(tmp / "many.zip")),
            ("NIfTI header claiming 2000³ int16", absurd_nifti(tmp / "huge.nii")),
        ]
        print(f"python {sys.version.split()[0]}; each child capped at {args.cap_gib:g} GiB address space, "
              f"{args.timeout_s:g} s; peak = resident high-water mark incl. imports (~the baseline of a bare "
              "import of numpy, pydicom, nibabel and engine.io)\n")
        print("| input | file size | path | time to refuse (s) | peak memory (MiB) | outcome |")
        print("|---|---:|---|---:|---:|---|")
        for name, path in cases:
            size = f"{path.stat().st_size / 2**20:.2f} MiB"
            for mode, label in (("unbounded", "before (unbounded)"), ("bounded", "now (bounded)")):
                r = measure(mode, path, args.cap_gib, args.timeout_s)
                seconds = "—" if r["seconds"] is None else f"{r['seconds']:.3f}"
                print(f"| {name} | {size} | {label} | {seconds} | {r['peak_mib']:.0f} | {r['outcome'][:110]} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
