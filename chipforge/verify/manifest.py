"""Read a generated block's manifest and pack/unpack its stream payloads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Manifest", "PayloadCodec", "load_manifest"]


@dataclass(frozen=True)
class PayloadCodec:
    """Packs a nested dict (``{"codes": [..], "unit": ..}``) into a payload integer and back,
    from the manifest's flat field table (names like ``codes[3]``)."""

    fields: tuple[dict[str, Any], ...]
    width: int

    def pack(self, values: dict[str, Any]) -> int:
        word = 0
        for field in self.fields:
            value = _lookup(values, field["name"])
            word |= (int(value) & ((1 << field["width"]) - 1)) << field["offset"]
        return word

    @property
    def words(self) -> int:
        """32-bit words a payload occupies."""
        return max(1, -(-self.width // 32))

    def pack_array(self, values: dict[str, Any]) -> np.ndarray:
        """Vectorized :meth:`pack`: field values as arrays (broadcast together, one entry per
        beat) -> (beats, :attr:`words`) uint32, least significant word first.

        ``values`` is nested like :meth:`pack`'s, or flat by field name (``"codes[3]"``).
        """
        arrays = {}
        for field in self.fields:
            name = field["name"]
            arrays[name] = np.asarray(values[name] if name in values
                                      else _lookup(values, name), dtype=np.int64)
        shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
        if len(shape) != 1:
            raise ValueError(f"payload field values must broadcast to one dimension (beats), "
                             f"not shape {shape}")
        out = np.zeros((shape[0], self.words), dtype=np.uint64)
        for field in self.fields:
            width, offset = field["width"], field["offset"]
            bits = arrays[field["name"]].astype(np.uint64) & np.uint64((1 << width) - 1)
            bits = np.broadcast_to(bits, shape)
            # A field may straddle 32-bit words: add its share to each word it touches.
            for word in range(offset // 32, (offset + width - 1) // 32 + 1):
                shift = offset - 32 * word
                part = bits << np.uint64(shift) if shift >= 0 else bits >> np.uint64(-shift)
                out[:, word] |= part & np.uint64(0xFFFFFFFF)
        return out.astype(np.uint32)

    def unpack_array(self, words: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorized :meth:`unpack`: (beats, :attr:`words`) uint32 -> {field name: int64
        array} (flat names like ``"codes[3]"``; signed fields sign-extended; fields up to
        63 bits)."""
        words = np.asarray(words, dtype=np.uint64)
        if words.ndim != 2 or words.shape[1] != self.words:
            raise ValueError(f"words must have shape (n, {self.words}), not {words.shape}")
        out = {}
        for field in self.fields:
            width, offset = field["width"], field["offset"]
            if width > 63:
                raise ValueError(f"field {field['name']} has {width} bits; unpack_array "
                                 "handles up to 63")
            value = np.zeros(len(words), dtype=np.uint64)
            for word in range(offset // 32, (offset + width - 1) // 32 + 1):
                shift = 32 * word - offset
                part = (words[:, word] << np.uint64(shift) if shift >= 0
                        else words[:, word] >> np.uint64(-shift))
                value |= part
            value &= np.uint64((1 << width) - 1)
            signed = value.astype(np.int64)
            if field["signed"]:
                signed -= (signed >> (width - 1)) << width
            out[field["name"]] = signed
        return out

    def unpack(self, word: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in self.fields:
            raw = (word >> field["offset"]) & ((1 << field["width"]) - 1)
            if field["signed"] and raw >> (field["width"] - 1):
                raw -= 1 << field["width"]
            _store(out, field["name"], raw)
        return out


_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def _parts(name: str) -> list[str | int]:
    return [m[1] if m[1] else int(m[2]) for m in _PART.finditer(name)]


def _lookup(values: Any, name: str) -> Any:
    for part in _parts(name):
        values = values[part]
    return values


def _store(out: dict[str, Any], name: str, value: int) -> None:
    parts = _parts(name)
    node: Any = out
    for part, following in zip(parts, parts[1:], strict=False):
        nxt = [] if isinstance(following, int) else {}
        if isinstance(part, int):
            while len(node) <= part:
                node.append(None)
            node[part] = node[part] if node[part] is not None else nxt
        else:
            node.setdefault(part, nxt)
        node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict[str, Any]

    @property
    def module(self) -> str:
        return self.data["module"]

    @property
    def verilog(self) -> Path:
        return self.path.parent / self.data["verilog"]

    @property
    def config(self) -> dict[str, Any]:
        return self.data["config"]

    def port_width(self, port: str) -> int:
        return self.data["ports"][port]["width"]

    def port_signed(self, port: str) -> bool:
        return bool(self.data["ports"][port].get("signed", False))

    def codec(self, port: str) -> PayloadCodec:
        entry = self.data["ports"][port]
        if "fields" not in entry:
            raise ValueError(f"port {port} of {self.module} has no payload fields")
        return PayloadCodec(tuple(entry["fields"]), entry["width"])


def load_manifest(path: str | Path) -> Manifest:
    """Load ``manifest.json`` (a file, or the block directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if path.exists() and not path.is_file():   # a FIFO would block forever
        raise ValueError(f"manifest {path} is not a regular file (a pipe, device or socket)")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no manifest at {path}: run `chipforge rtl` first") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"manifest {path} is not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"manifest {path} is not text: {e}") from None
    _check_names(path, data)
    return Manifest(path=path, data=data)


def _check_names(path: Path, data: Any) -> None:
    """The manifest's ``module`` and ``verilog`` become file names (in chipforge's cache and
    the block folder) and a tool's top module: plain names only, never a path."""
    from chipforge.guard import check_name

    if not isinstance(data, dict):
        raise ValueError(f"manifest {path} must hold a JSON object, not "
                         f"{type(data).__name__}")
    for field, kind in (("module", "identifier"), ("verilog", "file")):
        if field not in data:
            raise ValueError(f"manifest {path}: field {field!r} is missing")
        check_name(data[field], what=f"manifest {path}: field {field!r}", kind=kind)
