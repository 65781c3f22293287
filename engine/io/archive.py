"""Zip archives of a DICOM series, opened with bounds: the archive's directory is checked before
any member is decompressed, and members are then read as streams, one at a time.

What is refused, by the member's name, before reading: paths that climb out (`../x.dcm`),
absolute paths (`/x.dcm`, `C:\\x.dcm`), symbolic links, more than MAX_MEMBERS members, more than
MAX_UNCOMPRESSED_BYTES in all, and a compression ratio above MAX_RATIO (a zip bomb). Python's
zipfile stops every member's stream at the size its directory entry declares, so the declared
sizes checked here bound what is decompressed.
"""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

from engine.errors import DicomError

# A thin-slice chest CT is ~1,000 slices (0.625 mm over 60 cm) of 512 × 512 × 2 bytes: ~0.5 GiB.
# Room for a few series in one archive, far below what would exhaust a workstation.
MAX_MEMBERS = 20_000
MAX_UNCOMPRESSED_BYTES = 4 * 2**30
# CT slices deflate 2-5x (air outside the body compresses best); 1 GiB of zeros deflates ~1000x.
MAX_RATIO = 50.0
# Small members (text files, DICOMDIR) may compress well without being a threat.
_RATIO_FLOOR_BYTES = 1 * 2**20

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22


def _declared_entries(path: Path) -> int | None:
    """The member count the end-of-central-directory record declares, read without parsing the
    directory itself (so 10^6 tiny members cost nothing to refuse); None when not found (zip64, a
    long comment, a broken archive: ZipFile then decides)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - _EOCD_SIZE - 65535))
        tail = f.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        return None
    entries = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if entries != 0xFFFF:
        return entries
    # zip64: a locator just before the end record points at the zip64 end record (count at +32)
    locator = tail[at - 20:at] if at >= 20 else b""
    if locator[:4] != b"PK\x06\x07":
        return None
    offset = struct.unpack("<Q", locator[8:16])[0]
    with open(path, "rb") as f:
        f.seek(offset)
        record = f.read(56)
    if record[:4] != b"PK\x06\x06" or len(record) < 40:
        return None
    return struct.unpack("<Q", record[32:40])[0]


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name may not be used (it leaves the archive's folder), or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "a path that climbs out of the archive (..)"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix-made archives keep the file mode in the high 16 bits of external_attr.
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def checked_members(path: Path) -> list[zipfile.ZipInfo]:
    """The archive's file members after every directory-level check; DicomError naming the archive
    (and the member at fault) otherwise. Nothing is decompressed."""
    source = str(path)
    entries = _declared_entries(path)
    if entries is not None and entries > MAX_MEMBERS:
        raise DicomError(f"zip archive holds {entries:,} members, over the limit of {MAX_MEMBERS:,}", source)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DicomError(f"cannot read zip archive: {err}", source) from None
    if len(infos) > MAX_MEMBERS:
        raise DicomError(f"zip archive holds {len(infos):,} members, over the limit of {MAX_MEMBERS:,}", source)
    total = packed = 0
    files = []
    for info in infos:
        reason = unsafe_name_reason(info.filename)
        if reason:
            raise DicomError(f"zip member {info.filename!r} is {reason}: refused", source)
        if _is_symlink(info):
            raise DicomError(f"zip member {info.filename!r} is a symbolic link: refused", source)
        if info.is_dir():
            continue
        if info.file_size >= _RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DicomError(
                f"zip member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):,.0f}-fold "
                f"({info.compress_size:,} to {info.file_size:,} bytes), over the limit of {MAX_RATIO:g}: a zip bomb?",
                source,
            )
        total += info.file_size
        packed += info.compress_size
        files.append(info)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise DicomError(
            f"zip archive expands to {total / 2**30:.1f} GiB, over the limit of {MAX_UNCOMPRESSED_BYTES / 2**30:g} GiB",
            source,
        )
    if total >= _RATIO_FLOOR_BYTES and total > MAX_RATIO * max(packed, 1):
        raise DicomError(
            f"zip archive expands {total / max(packed, 1):,.0f}-fold ({packed:,} to {total:,} bytes), over the "
            f"limit of {MAX_RATIO:g}: a zip bomb?",
            source,
        )
    return files
