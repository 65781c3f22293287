"""Hostile inputs built in seconds, for the bounded-input tests and bench/bounded_input.py: zip bombs
(one huge member of zeros; 100,000 tiny members), zips with escaping or linked member names, and a
NIfTI whose header claims absurd dimensions. Zips are written by hand (zipfile takes ~10 s for
100,000 members, and cannot write a deflate stream without compressing every byte)."""

from __future__ import annotations

import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

_DOS_DATE = 0x21  # 1980-01-01
_UNIX = 3


@dataclass
class Member:
    name: str
    payload: bytes  # what is stored (deflated bytes when method == 8)
    crc: int
    size: int  # uncompressed size
    method: int = 0  # 0 stored, 8 deflated
    mode: int = stat.S_IFREG | 0o644


def stored(name: str, data: bytes, mode: int = stat.S_IFREG | 0o644) -> Member:
    return Member(name, data, zlib.crc32(data), len(data), 0, mode)


def write_zip(path: Path, members: list[Member]) -> Path:
    """A zip archive (zip64 end records when there are more than 65,535 members)."""
    central, offset = [], 0
    with open(path, "wb") as f:
        for m in members:
            name = m.name.encode()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, m.method, 0, _DOS_DATE, m.crc,
                                len(m.payload), m.size, len(name), 0) + name)
            f.write(m.payload)
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (_UNIX << 8) | 20, 20, 0, m.method, 0,
                                       _DOS_DATE, m.crc, len(m.payload), m.size, len(name), 0, 0, 0, 0,
                                       m.mode << 16, offset) + name)
            offset += 30 + len(name) + len(m.payload)
        directory = b"".join(central)
        f.write(directory)
        n = len(members)
        if n > 0xFFFF:
            end64 = offset + len(directory)
            f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(directory), offset))
            f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1))
            n = 0xFFFF
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(directory), offset, 0))
    return path


def zeros_bomb(path: Path, size: int = 2**30, name: str = "series/IM0001.dcm") -> Path:
    """One member of `size` zero bytes in a ~1 MB zip. Deflate after a full flush restarts with no
    history, so every 1 MiB block of zeros compresses to the same bytes: compress one, repeat it."""
    block = 2**20
    assert size % block == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    end = tail.flush()  # an empty final block closes the stream
    crc = 0
    zeros = bytes(block)
    for _ in range(size // block):
        crc = zlib.crc32(zeros, crc)
    return write_zip(path, [Member(name, piece * (size // block) + end, crc, size, 8)])


def many_members(path: Path, n: int = 100_000) -> Path:
    return write_zip(path, [stored(f"series/IM{i:06d}.dcm", b"\0") for i in range(n)])


def linked(path: Path, name: str = "series/IM0001.dcm", target: str = "/etc/passwd") -> Path:
    return write_zip(path, [stored(name, target.encode(), stat.S_IFLNK | 0o777)])


def absurd_nifti(path: Path, shape=(2000, 2000, 2000), dtype=np.int16) -> Path:
    """A valid NIfTI-1 header that claims `shape` voxels, followed by a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms((0.7, 0.7, 1.0) + (1.0,) * (len(shape) - 3))
    header.set_qform(np.diag([-0.7, -0.7, 1.0, 1.0]), code=1)
    header.set_sform(np.diag([-0.7, -0.7, 1.0, 1.0]), code=1)
    header["vox_offset"] = 352
    with open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + bytes(1024))
    return path
