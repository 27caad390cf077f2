"""The ways a line can be decoded, for tests that compare them.

"native": the compiled decoder first (then the others, as readers do); "simdjson": no
compiled decoder; "reference": neither (the reference decoder's own code only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from offrl.io import fastjson, native

# "native" only where the extension was built (test_native.py fails where it should have been).
DECODE_PATHS = [p for p in ("native", "simdjson", "reference") if p != "native" or native._linedec]


@contextmanager
def first_decoder(path: str) -> Iterator[None]:
    """Within the block, RecordDecoders (and readers) start with the ``path`` decoder."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fastjson, "NATIVE", path == "native")
        if path == "reference":
            m.setattr(fastjson, "simdjson", None)  # the decoder gets no simdjson parser
        yield
