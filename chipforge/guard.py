"""Checks on what a user hands chipforge: names, output folders, ``.npz`` archives.

Every check raises :class:`InputError` (a ``ValueError``), whose message names the input (the
file, the option), the field and the rule, so the command line prints it as one line and
exits with status 2.

- :func:`check_name`: a name read from a file (a manifest's module, a Verilog file name)
  that becomes part of a path or a tool script: an identifier or a plain file name, never a
  separator or ``..``.
- :func:`check_output_dir` / :func:`check_output_file`: the folder a command will write is
  a folder (or can be created) and is writable, checked by writing a probe file, before any
  work starts.
- :func:`inspect_npz`: the members of an ``.npz`` from the zip directory and the ``.npy``
  headers only (nothing is inflated): no pickled objects, header sizes that agree with the
  declared sizes, and a total that fits the memory budget. :func:`read_npz_rows` reads the
  first rows of one member, streaming, so ``--samples 10`` never inflates the rest.

Standard library, and numpy when an ``.npz`` is read (the CLI imports this module).
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "InputError",
    "NpzMember",
    "available_memory",
    "check_name",
    "check_output_dir",
    "check_inflation",
    "check_output_file",
    "check_regular_file",
    "inspect_npz",
    "npz_budget",
    "read_npz_rows",
]


class InputError(ValueError):
    """Bad user input: the message names the input, the field and the rule."""


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")


def check_name(value: object, *, what: str, kind: str = "identifier") -> str:
    """``value`` if it is a safe name, else :class:`InputError` naming ``what``.

    ``kind="identifier"``: letters, digits and ``_``, not starting with a digit (a Verilog
    module name; also safe as a file name). ``kind="file"``: a plain file name (letters,
    digits, ``_ . + -``, not starting with ``.`` or ``-``): no separator, no ``..``.
    """
    pattern, rule = {
        "identifier": (_IDENTIFIER, "an identifier (letters, digits, _; no path separators)"),
        "file": (_FILE_NAME, "a plain file name (letters, digits, _ . + -; no path "
                             "separators, not starting with . or -)"),
    }[kind]
    if not isinstance(value, str) or not pattern.match(value) or ".." in value:
        raise InputError(f"{what} must be {rule}, not {value!r}")
    return value


def _probe(folder: Path) -> None:
    """Write and remove a small file in ``folder`` (root ignores permission bits, and some
    file systems refuse writes that ``os.access`` allows: only a write tells)."""
    fd, name = tempfile.mkstemp(prefix=".chipforge-probe-", dir=folder)
    os.close(fd)
    os.unlink(name)


def check_output_dir(path: str | Path, *, option: str = "--out") -> Path:
    """Check that ``path`` is, or can become, a writable folder; creates nothing.

    Raises :class:`InputError` naming ``option`` and the path otherwise.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a folder")
    _check_writable_below(path, f"{option} {path}")
    return path


def _check_writable_below(path: Path, label: str) -> None:
    existing = path
    while not existing.exists():
        parent = existing.parent
        if parent == existing:
            break
        existing = parent
    if not existing.is_dir():
        raise InputError(f"{label}: {existing} is a file, so the folder cannot be created")
    try:
        _probe(existing)
    except OSError as e:
        raise InputError(f"{label}: cannot write in {existing} ({e.strerror or e})") from None


def check_output_file(path: str | Path, *, option: str) -> Path:
    """Check that file ``path`` can be written (its folder is, or can become, writable)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    _check_writable_below(path.parent, f"{option} {path}")
    return path


def check_regular_file(path: Path, label: str) -> None:
    """Refuse a pipe, device or socket where a file is read: reading one blocks forever
    (a FIFO) or never ends (``/dev/zero``)."""
    if path.exists() and not path.is_file():
        raise InputError(f"{label} is not a regular file (a pipe, device or socket); give "
                         "a file")


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; the physical size where it cannot be
    read). The file-size budget here and the simulation's memory budget
    (:mod:`chipforge.sim.memory`) both start from it."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 4 << 30


def npz_budget() -> int:
    """Bytes an ``.npz`` may inflate to: ``CHIPFORGE_MAX_FILE_MEMORY`` if set, else a
    quarter of the memory available now (the simulation needs the rest)."""
    text = os.environ.get("CHIPFORGE_MAX_FILE_MEMORY")
    if text:
        try:
            return int(text)
        except ValueError:
            raise InputError(f"CHIPFORGE_MAX_FILE_MEMORY must be a number of bytes, not "
                             f"{text!r}") from None
    return available_memory() // 4


@dataclass(frozen=True)
class NpzMember:
    """One array of an ``.npz``, as declared by the zip directory and its ``.npy`` header."""

    key: str
    shape: tuple[int, ...]
    dtype: Any
    """``numpy.dtype`` of the array."""
    fortran: bool
    nbytes: int
    """Bytes the array takes once inflated (from the header)."""
    stored: int = 0
    """Bytes the zip holds for it (compressed), header included."""

    def bytes_for(self, rows: int) -> int:
        """Bytes inflated to read the first ``rows`` entries (all of them in Fortran order)."""
        if not self.shape or (self.fortran and len(self.shape) > 1):
            return self.nbytes
        return min(rows, self.shape[0]) * (self.nbytes // max(self.shape[0], 1))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def _read_header(stream, label: str, key: str) -> tuple[tuple[int, ...], bool, Any]:
    import numpy as np
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{label}: array {key!r} has a corrupt .npy header ({e})") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def inspect_npz(path: str | Path, *, what: str = "file",
                budget: int | None = None) -> dict[str, NpzMember]:
    """The arrays of an ``.npz`` without inflating them, checked.

    Refused (:class:`InputError` naming ``what``, the path, the array and the rule): a
    missing file, a folder, a file that is not a zip archive, a member that is not an
    ``.npy``, an array of Python objects (it would need pickle), a header whose size
    disagrees with the size the zip directory declares, and, when ``budget`` is given, a
    total inflated size above it.
    """
    import numpy as np

    path = Path(path)
    label = f"{what} {path}"
    if not path.exists():
        raise InputError(f"{label} does not exist")
    if path.is_dir():
        raise InputError(f"{label} is a folder, not an .npz file")
    check_regular_file(path, label)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{label} is not an .npz archive of .npy arrays (corrupt or "
                         "truncated, or another format)")
    members: dict[str, NpzMember] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise InputError(f"{label}: member {info.filename!r} is not an .npy "
                                     "array")
                key = info.filename[:-4]
                with archive.open(info) as stream:
                    shape, fortran, dtype = _read_header(stream, label, key)
                    header_bytes = stream.tell()
                if dtype.hasobject:
                    raise InputError(f"{label}: array {key!r} holds Python objects, which "
                                     "need pickle; only plain numeric arrays are read")
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if header_bytes + nbytes != info.file_size:
                    raise InputError(
                        f"{label}: array {key!r} declares shape {shape} of {dtype} "
                        f"({nbytes} bytes) but the archive holds {info.file_size - header_bytes}"
                        " bytes for it: the file is corrupt or forged")
                members[key] = NpzMember(key, shape, dtype, fortran, nbytes,
                                         info.compress_size)
    except zipfile.BadZipFile as e:
        raise InputError(f"{label} is a corrupt .npz archive ({e})") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{label} cannot be read ({e})") from None
    if budget is not None:
        for m in members.values():
            check_inflation(m, m.nbytes, label)
        total = sum(m.nbytes for m in members.values())
        if total > budget:
            raise InputError(
                f"{label} inflates to {_gib(total)} ({path.stat().st_size} bytes on disk), "
                f"more than the {_gib(budget)} allowed for a file (a quarter of the available "
                "memory; set CHIPFORGE_MAX_FILE_MEMORY to change)")
    return members


BOMB_RATIO = 200
"""An array that inflates more than this many times its stored size, to more than
:data:`BOMB_MIN_BYTES`, is refused as a decompression bomb: real images deflate far less
(``np.savez_compressed``, measured: digits upsampled to 16x16 float64 16x, MNIST float32
12x, MNIST uint8 5x); only constant filler reaches deflate's limit, about 1000x."""
BOMB_MIN_BYTES = 256 << 20


def check_inflation(member: NpzMember, nbytes: int, label: str) -> None:
    """Refuse reading ``nbytes`` of ``member`` when the archive stores it ``BOMB_RATIO``
    times smaller (see :data:`BOMB_RATIO`); InputError naming the file and the array."""
    if nbytes > BOMB_MIN_BYTES and member.stored and \
            member.nbytes > BOMB_RATIO * member.stored:
        raise InputError(
            f"{label}: array {member.key!r} inflates to {_gib(member.nbytes)} from "
            f"{member.stored} stored bytes ({member.nbytes // member.stored}x): a "
            f"decompression bomb, not data (real arrays deflate under {BOMB_RATIO}x); "
            "refused before inflating")


def read_npz_rows(path: str | Path, member: NpzMember, rows: int | None, *,
                  what: str = "file") -> Any:
    """The first ``rows`` entries (along axis 0) of one member, streamed out of the zip:
    only those bytes are inflated. ``rows=None`` reads the whole array."""
    import numpy as np

    path = Path(path)
    shape = member.shape
    n = 0 if not shape else shape[0] if rows is None else min(rows, shape[0])
    if member.fortran and n < shape[0] and len(shape) > 1:
        # Fortran order keeps a sample's values apart: read the whole array (the caller's
        # budget counts it whole, see NpzMember.bytes_for), keep the first rows.
        return read_npz_rows(path, member, None, what=what)[:n].copy()
    count = n * int(np.prod(shape[1:], dtype=np.int64)) if shape else 1
    out = np.empty(count, dtype=member.dtype)  # filled in place: no second copy
    view = memoryview(out).cast("B")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(member.key + ".npy") as stream:
            _read_header(stream, f"{what} {path}", member.key)
            filled = 0
            while filled < len(view):
                got = stream.readinto(view[filled:])
                if not got:
                    break
                filled += got
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(f"{what} {path}: array {member.key!r} is corrupt ({e})") from None
    if filled != len(view):
        raise InputError(f"{what} {path}: array {member.key!r} is truncated")
    out_shape = (n, *shape[1:]) if shape else ()
    if member.fortran and len(shape) > 1:
        return out.reshape(out_shape, order="F")
    return out.reshape(out_shape)
