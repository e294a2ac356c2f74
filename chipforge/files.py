"""Every file chipforge writes goes through here: whole or not at all, never through a link.

- :func:`atomic_open` / :func:`atomic_write`: the bytes go to a new temporary file in the
  target's folder (``mkstemp``: created exclusively, so nothing in the way is followed),
  are flushed and ``fsync``'d, and the temporary file is renamed over the target
  (``os.replace``). A symbolic link at the target is replaced by the file, never followed
  (the file it pointed to keeps its bytes); a failed write (a full disk, a quota, an
  exception while producing the bytes) removes the temporary file and leaves what was at
  the target untouched.
- :func:`atomic_savefig`: a Matplotlib figure, the same way.
- :class:`AppendFile`: a file that grows by whole records (a sweep's ``results.csv``): it
  is opened with ``O_NOFOLLOW`` (a link is refused, not followed), and a record whose write
  fails is cut off again, so the file never ends in half a line.

Errors are :class:`OSError` whose ``filename`` is the target path, so the command line
prints ``PATH: reason`` (``chipforge.cli.main``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["AppendFile", "atomic_open", "atomic_savefig", "atomic_write", "exclusive_lock",
           "make_folder"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _named(e: OSError, path: Path) -> OSError:
    """``e`` with ``filename`` the target (not the temporary file, or none at all)."""
    reason = e.strerror or str(e) or type(e).__name__
    return OSError(e.errno, f"cannot write ({reason})" if e.errno else reason, str(path))


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, encoding: str | None = None
                ) -> Iterator[IO[Any]]:
    """A file object whose contents replace ``path`` when the ``with`` block ends without
    an error; see the module doc. ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless
    ``encoding``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    folder = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _named(e, path) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())     # mkstemp makes 0600; a plain file's mode
        with open(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None,
                  newline="" if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _named(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:   # the rename itself survives a crash once the folder is synced
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def make_folder(path: str | Path) -> Path:
    """Create folder ``path`` (and its parents) if missing; a symbolic link there is refused,
    so that files chipforge puts in a folder it names itself never land elsewhere."""
    path = Path(path)
    if path.is_symlink():
        raise OSError(errno.ELOOP, "is a symbolic link; chipforge does not write through "
                      "links (remove it, or choose another --out)", str(path))
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    return path


def atomic_savefig(fig, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` into ``path`` atomically (the format from the suffix, default png)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix[1:].lower() or "png")
    with atomic_open(path, "wb") as f:
        fig.savefig(f, **kwargs)
    return path


class AppendFile:
    """A text file that grows by whole records, each ``fsync``'d before :meth:`append`
    returns. A symbolic link at ``path`` is refused (``O_NOFOLLOW``); a record whose write
    fails is truncated away again before the error is raised, naming ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "is a symbolic link; chipforge does not write "
                              "through links (replace it by a file)", str(self.path)) from None
            raise _named(e, self.path) from None

    @property
    def size(self) -> int:
        """Bytes in the file now."""
        return os.fstat(self._fd).st_size

    def append(self, text: str) -> None:
        data = text.encode("utf-8")
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):   # no half record stays behind
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            raise _named(e, self.path) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing; a link there is
    refused, not followed) for the ``with`` block, so that one job at a time writes a
    folder; the OS drops the lock if the process dies. Raises ``busy()`` when another
    process holds it."""
    import fcntl

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with open(fd, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        yield


def array_sha256(*arrays) -> str:
    """SHA-256 of arrays, their dtypes and shapes included (so a reshaped or retyped copy
    of the same bytes differs): the fingerprint of data and weights in manifests and
    checkpoints."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
