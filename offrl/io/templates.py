"""Compressed columns decoded by learning each payload layout once (FORMAT.md).

A file repeats the same few payload layouts thousands of times: the same dtype and
shape, so the same pickle opcodes (or ``.npy`` header) around a different block of
array bytes. :class:`PayloadTemplates` decodes the first payload of a layout with
:func:`offrl.io.codecs.decode_payload` (numpy's npy reader, or the restricted
unpickler) and then remembers it as a *template*: the bytes before and after the
array data, and the dtype and shape it produced. A later payload of the same length
whose bytes before and after the data are identical to a template's is read with
``np.frombuffer`` over its data: nothing is unpickled, nothing is executed.

Why that is exact: a template is only learned when the data block is the whole
argument of one byte-string opcode (``BINBYTES``, ``SHORT_BINBYTES``, ``BINBYTES8``,
``BYTEARRAY8``; its length prefix is part of the fixed bytes) or the whole body
after an npy header, when the decoded array's memory equals that block, and when a
probe with every data byte changed decodes to exactly those changed bytes. A
payload that differs anywhere outside the data block (another global, another
shape, a longer frame) matches no template and takes the reference path, which
refuses anything but numpy arrays as before.
"""

from __future__ import annotations

import pickletools
from typing import cast

import numpy as np

from offrl.io.codecs import NPY_MAGIC, CodecError, decode_payload, decompress_string

try:  # the compiled template match (offrl/io/_linedec.c), when it was built
    from offrl.io._linedec import match as _match  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised only where the build was skipped
    _match = None

# Opcodes whose argument is raw bytes, and the size of their length prefix.
_BYTES_OPCODES = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8, "BYTEARRAY8": 8}
_FLIP = bytes(range(255, -1, -1))  # maps every byte to another one (b -> 255 - b)
# (bytes before the data, bytes after it, dtype, shape, number of items)
_Template = tuple[bytes, bytes, np.dtype, tuple[int, ...], int]


def _npy_data_start(payload: bytearray) -> int | None:
    """Where the array bytes of an npy payload start (after its header)."""
    major = payload[6:7]
    if major == b"\x01":
        return 10 + int.from_bytes(payload[8:10], "little")
    if major in (b"\x02", b"\x03"):
        return 12 + int.from_bytes(payload[8:12], "little")
    return None


def _pickle_data_start(payload: bytearray, nbytes: int) -> int | None:
    """Where the one byte-string argument of ``nbytes`` bytes starts; None unless unique."""
    starts = []
    try:
        # genops only disassembles: it never imports or calls anything.
        for op, arg, pos in pickletools.genops(bytes(payload)):
            prefix = _BYTES_OPCODES.get(op.name)
            is_data = isinstance(arg, (bytes, bytearray)) and len(arg) == nbytes
            if prefix is not None and pos is not None and is_data:
                starts.append(pos + 1 + prefix)
    except ValueError:
        return None
    return starts[0] if len(starts) == 1 else None


def _data_start(payload: bytearray, arr: np.ndarray) -> int | None:
    """Where ``arr``'s bytes lie in ``payload`` as one opaque block; None if they do not."""
    if arr.dtype.hasobject or not arr.flags.c_contiguous or arr.nbytes == 0:
        return None
    if payload.startswith(NPY_MAGIC):
        start = _npy_data_start(payload)
    else:
        start = _pickle_data_start(payload, arr.nbytes)
    if start is None or start + arr.nbytes > len(payload):
        return None
    if payload[start : start + arr.nbytes] != arr.tobytes():
        return None
    return start


def _match_py(payload: bytearray, templates: list[_Template]) -> np.ndarray | None:
    """The data of the first template whose head and tail match; None if none does."""
    for head, tail, dtype, shape, count in templates:
        if payload.startswith(head) and payload.endswith(tail):
            arr = np.frombuffer(payload, dtype, count, len(head)).reshape(shape)
            # Pickled data sits at an odd offset: copy into aligned memory.
            return arr if arr.flags.aligned else arr.copy()
    return None


class PayloadTemplates:
    """Decodes compressed columns like :func:`offrl.io.codecs.decode_string`, learning layouts.

    Tries to learn at most ``max_attempts`` times (a file has a handful of layouts; one
    that cannot be learned, such as a protocol-2 pickle, must not cost a disassembly per
    line forever); not thread-safe.
    """

    def __init__(self, max_attempts: int = 64) -> None:
        self._by_length: dict[int, list[_Template]] = {}
        self._attempts_left = max_attempts

    @property
    def by_length(self) -> dict[int, list[_Template]]:
        """The learned templates by payload length (read by the compiled decoder)."""
        return self._by_length

    def decode_string(self, value: str) -> np.ndarray:
        """Decode one ``BCJNG...`` string; same result and errors as codecs.decode_string."""
        payload = cast(bytearray, decompress_string(value, writable=True))
        return self.decode_payload(payload)

    def decode_payload(self, payload: bytearray) -> np.ndarray:
        """A template's np.frombuffer when one matches, else the reference decoder (then learn)."""
        found = self._by_length.get(len(payload))
        if found:
            matched = (_match or _match_py)(payload, found)
            if matched is not None:
                return matched  # type: ignore[no-any-return]
        arr = decode_payload(payload)
        if self._attempts_left > 0:
            self._attempts_left -= 1
            self._learn(payload, arr)
        return arr

    def _learn(self, payload: bytearray, arr: np.ndarray) -> None:
        start = _data_start(payload, arr)
        if start is None:
            return
        end = start + arr.nbytes
        # Probe: the same payload with every data byte changed must decode to those bytes,
        # so the data block is only ever copied into the array, never interpreted.
        probe = bytearray(payload)
        flipped = payload[start:end].translate(_FLIP)
        probe[start:end] = flipped
        try:
            check = decode_payload(probe)
        except (CodecError, ValueError, TypeError, LookupError, EOFError, OverflowError):
            return  # the data is interpreted, not just copied: no template
        if check.dtype != arr.dtype or check.shape != arr.shape or check.tobytes() != flipped:
            return
        template = (bytes(payload[:start]), bytes(payload[end:]), arr.dtype, arr.shape, arr.size)
        self._by_length.setdefault(len(payload), []).append(template)
