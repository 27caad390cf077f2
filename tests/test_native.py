"""The compiled line decoder (offrl/io/_linedec.c) agrees with decode_record exactly.

Whenever :func:`offrl.io.native.native_columns` takes a line, the batch that
:func:`offrl.io.decode.finish_columns` makes of its columns equals the reference
:func:`offrl.io.decode.decode_record` on the same line: column names and order, dtypes,
shapes and values bit for bit (-0.0 included), or the same error. Lines it cannot
prove it decodes exactly must give None (the reader then takes the other paths).
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import shutil
import struct
import sysconfig
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_UP, Context, Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from benchmarks.bench_reader import cartpole_record
from offrl.batch import SampleBatch
from offrl.errors import DataFormatError
from offrl.io import native
from offrl.io.codecs import encode_column
from offrl.io.decode import decode_record, finish_columns
from offrl.io.fastjson import RecordDecoder
from offrl.io.templates import PayloadTemplates
from tests.rllib_variants import zero_d_columns
from tests.shared_data import RLLIB_FIXTURE


def _c_compiler() -> str | None:
    """The C compiler Python's build configuration names, if it is installed."""
    words = (sysconfig.get_config_var("CC") or "").split()
    return shutil.which(words[0]) if words else None


_linedec = native._linedec
if _linedec is None and _c_compiler() is None:
    pytest.skip(
        "offrl.io._linedec is not built and there is no C compiler to build it",
        allow_module_level=True,
    )

PATH, LINENO = "f.json", 7
KINDS = native._KINDS
Outcome = SampleBatch | Exception


@pytest.fixture(autouse=True)
def _require_extension(request: pytest.FixtureRequest) -> None:
    if _linedec is None and request.node.name != "test_extension_is_built_where_a_compiler_exists":
        pytest.fail(
            f"offrl.io._linedec was not built although a C compiler ({_c_compiler()}) "
            "exists: rebuild with `pip install -e . --no-deps`"
        )


def test_extension_is_built_where_a_compiler_exists() -> None:
    if os.environ.get("OFFRL_NO_NATIVE", "") not in ("", "0"):
        pytest.skip("OFFRL_NO_NATIVE is set: the extension is switched off on purpose")
    compiler = _c_compiler()
    if compiler is None:
        pytest.skip("no C compiler: the extension is optional here")
    assert native.NATIVE, (
        f"the compiled line decoder offrl.io._linedec was not built although a C compiler "
        f"({compiler}) exists: rebuild with `pip install -e . --no-deps`"
    )


# -- comparing the native decoder with the reference ------------------------------------


def reference(line: bytes) -> Outcome:
    """decode_record's batch, or the exception it raises."""
    try:
        return decode_record(line, path=PATH, lineno=LINENO)
    except Exception as e:  # compared by type and message
        return e


def via_native(line: bytes, templates: PayloadTemplates | None = None) -> Outcome | None:
    """native_columns + finish_columns (as RecordDecoder does), or None when native declines.

    An exception either raises is the outcome (RecordDecoder would pass it on): it must
    then be decode_record's. (A corrupt pickle length makes both raise MemoryError.)
    """
    try:
        cols = native.native_columns(
            line, templates if templates is not None else PayloadTemplates()
        )
        if cols is None:
            return None
        assert type(cols) is dict
        return finish_columns(cols, PATH, LINENO)
    except Exception as e:  # compared by type and message
        return e


def assert_outcomes_equal(
    got: Outcome, want: Outcome, line: bytes, *, same_message: bool = False
) -> None:
    """Same batch (names, order, dtypes, shapes, values, -0.0) or the same error type.

    ``same_message``: errors must also be worded alike (RecordDecoder's promise).
    """
    ctx = line[:300]
    if isinstance(want, Exception) or isinstance(got, Exception):
        assert type(got) is type(want), (got, want, ctx)
        if same_message:
            assert str(got) == str(want), ctx
        return
    assert list(got.keys()) == list(want.keys()), ctx
    for name in want:
        a, b = got[name], want[name]
        assert type(a) is np.ndarray, (name, type(a), ctx)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (name, a.dtype, b.dtype, a.shape, ctx)
        if b.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), (name, a, b, ctx)
            assert np.array_equal(np.signbit(a), np.signbit(b)), (name, a, b, ctx)
        elif b.dtype == object:
            assert a.tolist() == b.tolist(), (name, ctx)
            dicts = [id(v) for v in a.tolist() if isinstance(v, dict)]
            assert len(set(dicts)) == len(dicts), (name, "rows share one dict", ctx)
        else:
            assert np.array_equal(a, b), (name, a, b, ctx)
        assert a.flags.writeable or not b.flags.writeable, (name, ctx)


def assert_same(
    line: bytes, templates: PayloadTemplates | None = None, *, same_message: bool = False
) -> bool:
    """Native agrees with decode_record whenever it takes ``line``; returns whether it did."""
    got = via_native(line, templates)
    if got is None:
        return False
    assert_outcomes_equal(got, reference(line), line, same_message=same_message)
    return True


def assert_reader_agrees(line: bytes) -> None:
    """RecordDecoder (native, simdjson, reference) gives decode_record's batch or error."""
    try:
        got: Outcome = RecordDecoder().decode(line, path=PATH, lineno=LINENO)
    except Exception as e:
        got = e
    assert_outcomes_equal(got, reference(line), line, same_message=True)


# -- building lines ----------------------------------------------------------------------


def sample_line(n: int, **raw: str) -> bytes:
    """A SampleBatch line of ``n`` rows; ``raw`` gives columns as JSON text (replacing defaults)."""
    cols = {
        "obs": json.dumps([[0.5, -1.25]] * n),
        "actions": json.dumps([i % 2 for i in range(n)]),
        "rewards": json.dumps([1.0] * n),
        "dones": json.dumps([False] * (n - 1) + [True]),
    }
    cols.update(raw)
    body = ", ".join(f'"{k}": {v}' for k, v in cols.items())
    return ('{"type": "SampleBatch", ' + body + "}\n").encode()


def numbers_line(column: str, tokens: list[str]) -> bytes:
    """A line whose ``column`` holds the raw number tokens (one row each)."""
    return sample_line(len(tokens), **{column: "[" + ", ".join(tokens) + "]"})


def multi_agent(columns: dict[str, Any], policies: tuple[str, ...] = ("default_policy",)) -> bytes:
    record = {
        "type": "MultiAgentBatch",
        "policy_batches": {p: columns for p in policies},
        "count": len(columns["rewards"]),
    }
    return (json.dumps(record) + "\n").encode()


def small_columns(n: int = 10, seed: int = 0) -> dict[str, Any]:
    """~n rows of several column kinds: compressed obs, 2-D floats, ids, flags, infos, extra."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(0, 1, size=(n + 1, 4)).round(2).astype(np.float32)
    return {
        "obs": encode_column(obs[:-1], "rllib"),
        "new_obs": obs[1:].astype(np.float64).round(2).tolist(),
        "actions": rng.integers(0, 3, n).tolist(),
        "rewards": [float(np.float32(x)) for x in rng.normal(0, 1, n)],
        "terminateds": [False] * (n - 1) + [True],
        "truncateds": [False] * n,
        "eps_id": [int(rng.integers(0, 2**62))] * n,
        "t": list(range(n)),
        "infos": [{} for _ in range(n)],
        "action_dist_inputs": encode_column(rng.normal(0, 1, size=(n, 2)), "offrl"),
        "action_logp": rng.normal(0, 1, size=n).round(3).tolist(),
        "extra": [[i, i + 1] for i in range(n)],
        "flags": [bool(i % 3) for i in range(n)],
    }


def small_line(n: int = 10, seed: int = 0) -> bytes:
    return (json.dumps({"type": "SampleBatch", **small_columns(n, seed)}) + "\n").encode()


# -- 1-3: the common lines are taken and agree -------------------------------------------


@pytest.mark.parametrize("codec", [None, "rllib", "offrl"])
def test_bench_reader_cartpole_lines_are_taken_and_agree(codec: str | None) -> None:
    rng = np.random.default_rng(3)
    templates = PayloadTemplates()  # shared, as in a reader: later lines use learned layouts
    for n in (100, 100, 1, 2, 37):
        record = cartpole_record(rng, n, codec)
        for text in (json.dumps(record), json.dumps(record, separators=(",", ":"))):
            line = (text + "\n").encode()
            assert assert_same(line, templates), f"native declined a {codec} CartPole line"
            assert assert_same(line)  # and with fresh templates
            assert_reader_agrees(line)


def test_rllib_fixture_lines_are_taken_and_agree() -> None:
    if not RLLIB_FIXTURE.exists():
        pytest.skip(f"RLlib fixture not found at {RLLIB_FIXTURE}")
    lines = RLLIB_FIXTURE.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    for line in lines:
        assert assert_same(line), "native declined a line of the RLlib fixture"
        batch = via_native(line)
        assert isinstance(batch, SampleBatch) and batch["obs"].dtype == np.float32


def test_multi_agent_default_policy_is_taken_and_agrees() -> None:
    line = multi_agent(small_columns())
    assert b'"count": 10' in line
    assert assert_same(line)
    assert_reader_agrees(line)
    # The columns are the policy's only: not "type", "count" or "policy_batches".
    cols = native.native_columns(line, PayloadTemplates())
    names = list(small_columns())
    assert cols is not None and list(cols)[: len(names)] == names
    assert not {"type", "count", "policy_batches"} & set(cols)


def test_multi_agent_with_two_policies_is_declined() -> None:
    line = multi_agent(small_columns(), policies=("default_policy", "other"))
    assert native.native_columns(line, PayloadTemplates()) is None
    assert isinstance(reference(line), Exception)
    assert_reader_agrees(line)


def test_infos_rows_are_fresh_dicts() -> None:
    cols = native.native_columns(small_line(), PayloadTemplates())
    assert cols is not None
    infos = cols["infos"]
    assert infos.dtype == object and infos.tolist() == [{}] * 10
    infos[0]["seen"] = True
    assert infos[1] == {}


# -- 4: numbers are read exactly -------------------------------------------------------


def _halfway(d: float) -> Fraction:
    """The exact midpoint between ``d`` and the next double up."""
    return (Fraction(d) + Fraction(math.nextafter(d, math.inf))) / 2


def _decimal_text(value: Fraction, digits: int, rounding: str) -> str:
    """``value`` with ``digits`` significant digits, rounded down or up (mantissa-exponent)."""
    ctx = Context(prec=digits, rounding=rounding)
    dec = ctx.divide(Decimal(value.numerator), Decimal(value.denominator))
    return f"{dec:.{digits - 1}e}"


def _exact_text(value: Fraction) -> str:
    """The exact decimal expansion of a dyadic fraction."""
    dec = Context(prec=1000).divide(Decimal(value.numerator), Decimal(value.denominator))
    assert Fraction(dec) == value
    text = format(dec, "f")
    return text if "." in text else text + ".0"


def _halfway_tokens(rnd: random.Random) -> list[str]:
    """Midpoints between adjacent doubles, exact and a hair below/above, in many spellings."""
    doubles = [1.0, 0.1, 1e22, 1e23, 9007199254740992.0, 2.0**63, 1.5e-30, 3e30]
    doubles += [rnd.uniform(1, 2) * 10.0 ** rnd.randint(-30, 30) for _ in range(60)]
    doubles += [float(rnd.randint(2**53, 2**64 - 2**12)) for _ in range(60)]
    tokens = []
    for d in doubles:
        mid = _halfway(d)
        exact = _exact_text(mid)
        if len(exact) < 75:
            tokens.append(exact)
        if mid.denominator == 1:  # big integers: also as an exponent form and a fraction
            tokens.append(f"{mid.numerator}e0")
            tokens.append(f"{mid.numerator // 1000}.{mid.numerator % 1000:03d}e3")
            tokens.append(f"{mid.numerator - 1}.0")
            tokens.append(f"{mid.numerator + 1}.0")
        for digits in (16, 17, 18, 19, 20, 25, 30):
            tokens.append(_decimal_text(mid, digits, ROUND_DOWN))
            tokens.append(_decimal_text(mid, digits, ROUND_UP))
    # Midpoints between adjacent float32 values: exact doubles, then a tie to float32.
    for _ in range(40):
        f = np.float32(rnd.uniform(-1e6, 1e6))
        up = np.nextafter(f, np.float32(np.inf))
        tokens.append(repr((float(f) + float(up)) / 2))
    # Double rounding traps: the columns are float32, so a double off by one ulp only shows
    # where its neighbours straddle a float32 tie. Aim half a double-ulp beside such a tie
    # (19 digits: within x87's 64-bit precision of the double midpoint, but not on it).
    for _ in range(150):
        f = np.float32(rnd.uniform(1, 10) * 10.0 ** rnd.randint(-9, 37))
        tie = (Fraction(float(f)) + Fraction(float(np.nextafter(f, np.float32(np.inf))))) / 2
        for direction in (math.inf, -math.inf):
            mid = (tie + Fraction(math.nextafter(float(tie), direction))) / 2
            for digits in (17, 18, 19, 20, 25):
                tokens.append(_decimal_text(mid, digits, ROUND_DOWN))
                tokens.append(_decimal_text(mid, digits, ROUND_UP))
    return tokens


def _digit_tokens(rnd: random.Random) -> list[str]:
    """1-25 significant digits, with point and exponent, within float32's range."""
    tokens = []
    for ndig in range(1, 26):
        for _ in range(6):
            tail = "".join(rnd.choice("0123456789") for _ in range(ndig - 1))
            digits = str(rnd.randint(1, 9)) + tail
            point = rnd.randint(0, ndig)
            exp = rnd.randint(-30, 30)
            exp = max(-35 - point, min(exp, 37 - point))
            sign = rnd.choice(["", "-"])
            mantissa = digits if point == ndig else (digits[:point] or "0") + "." + digits[point:]
            e = rnd.choice(["e", "E"])
            esign = rnd.choice(["", "+"]) if exp >= 0 else "-"
            tokens.append(f"{sign}{mantissa}{e}{esign}{abs(exp)}")
            if point < ndig:
                tokens.append(f"{sign}{mantissa}")
    return tokens


def _double_tokens(rnd: random.Random) -> list[str]:
    """Random doubles (shortest repr) within float32's range, and float32-derived doubles."""
    tokens = []
    for _ in range(150):
        bits = rnd.getrandbits(52) | ((1023 + rnd.randint(-120, 120)) << 52)
        bits |= rnd.getrandbits(1) << 63
        tokens.append(repr(struct.unpack("<d", struct.pack("<Q", bits))[0]))
    for _ in range(150):
        tokens.append(repr(rnd.uniform(-10, 10) * 10.0 ** rnd.randint(-30, 30)))
    for _ in range(150):
        x = rnd.gauss(0, 1) * 10.0 ** rnd.randint(-40, 37)
        tokens.append(repr(float(np.float32(x))))
    tokens += [repr(float(np.float32(v))) for v in (1e-45, 1.2e-38, 3.4028235e38, 0.1, 1 / 3)]
    return tokens


SPECIAL_FLOATS = [
    "-0.0", "0.0", "0e5", "0E-7", "-0e0", "1E+2", "1e0", "1.5E-3", "2.5e+10", "0.000123",
    "0.0000000000000000000001234567", "-0.000000000000000000000000000000000001",
    "123456789012345678901234567890e-10", "0.1", "0.30000000000000004", "1e-45", "1e-46",
    "1.401298464324817e-45", "7e-46", "7.1e-46", "1e-400", "5e-324", "2.2250738585072014e-308",
    "3.4028234663852886e38", "3.4028235e38", "1.7976931348623157e-300", "9007199254740993.0",
    "4503599627370497.5", "1e22", "1e23", "8.589973e9", "123.456e-2", "10000000000000000000.0",
    "100000000000000000000e-2", "0.00000000000000000000000000000000000000000000000000000000001",
    "1e-0000000000000000000000000000001", "12345678901234567890123456789012345678901234.5e-20",
]  # fmt: skip


def _chunks(tokens: list[str], size: int = 60) -> list[list[str]]:
    return [tokens[i : i + size] for i in range(0, len(tokens), size)]


def _assert_numbers_taken_and_agree(tokens: list[str]) -> None:
    for chunk in _chunks(tokens):
        for column in ("rewards", "x"):  # a float32 column and an unknown one
            line = numbers_line(column, chunk)
            assert assert_same(line), f"native declined {column} numbers {chunk}"


def test_random_doubles_agree() -> None:
    _assert_numbers_taken_and_agree(_double_tokens(random.Random(11)))


def test_numbers_with_1_to_25_significant_digits_agree() -> None:
    _assert_numbers_taken_and_agree(_digit_tokens(random.Random(12)))


def test_special_spellings_agree() -> None:
    _assert_numbers_taken_and_agree(SPECIAL_FLOATS)
    for token in SPECIAL_FLOATS:  # one at a time too, beside an int and alone
        for tokens in ([token], ["3", token], [token, "3"]):
            for column in ("rewards", "x", "actions", "action_logp"):
                assert assert_same(numbers_line(column, tokens)), (column, tokens)


def test_negative_zero_keeps_its_sign() -> None:
    batch = via_native(numbers_line("rewards", ["-0.0", "0.0", "-0"]))
    assert isinstance(batch, SampleBatch)
    assert np.signbit(batch["rewards"]).tolist() == [True, False, False]


def test_halfway_values_agree() -> None:
    tokens = _halfway_tokens(random.Random(13))
    assert len(tokens) > 1000
    taken = 0
    for chunk in _chunks(tokens, 30):
        for column in ("rewards", "x"):
            taken += assert_same(numbers_line(column, chunk))
    assert taken == 2 * len(_chunks(tokens, 30))  # every token is a finite float


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_halfway_values_agree_one_by_one() -> None:
    rnd = random.Random(14)
    tokens = rnd.sample(_halfway_tokens(rnd), 400)
    taken = 0
    for token in tokens:
        for column in ("rewards", "x"):
            taken += assert_same(numbers_line(column, [token, "0.5"]))
    assert taken == 2 * len(tokens)


def test_integers_in_id_columns_are_exact() -> None:
    rnd = random.Random(15)
    values = [2**63 - 1, -(2**63), 0, -1, 2**53 + 1, -(2**53) - 1, 2**62 + 12345]
    values += [rnd.choice([-1, 1]) * rnd.getrandbits(rnd.randint(1, 63)) for _ in range(400)]
    for chunk in _chunks([str(v) for v in values]):
        for column in ("eps_id", "t", "unroll_id", "x", "actions"):
            line = numbers_line(column, chunk)
            assert assert_same(line), (column, chunk)
            batch = via_native(line)
            assert isinstance(batch, SampleBatch)
            assert batch[column].dtype == np.int64
            assert batch[column].tolist() == [int(v) for v in chunk]


@pytest.mark.parametrize(
    "column,tokens",
    [
        ("rewards", ["9007199254740993", "1.0"]),
        ("rewards", ["-9007199254740993"]),
        ("rewards", ["9007199254740992", "9007199254740993", "9223372036854775807"]),
        ("rewards", ["18014398509481985", "0.5"]),
        ("x", ["9007199254740993", "0.5"]),
        ("x", ["0.5", "9007199254740993"]),
        ("x", ["9223372036854775807", "1e0"]),
        ("actions", ["0.5", "9007199254740995"]),
        ("action_dist_inputs", ["9007199254740993"]),
        ("eps_id", ["9223372036854775808"]),
        ("eps_id", ["-9223372036854775809"]),
        ("eps_id", ["18446744073709551615"]),
        ("x", ["18446744073709551616"]),
        ("x", ["100000000000000000000000"]),
        ("rewards", ["1e39"]),
        ("rewards", ["-1e39", "1.0"]),
        ("rewards", ["3.4028235677973366e38"]),
        ("x", ["1e39", "0.5"]),
        ("obs", ["[1e39, 0.0]"]),
        ("actions", ["1e39"]),
        ("rewards", ["1e400"]),
        ("rewards", ["-1e400"]),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_inexact_or_overflowing_numbers_fall_back_or_agree(column: str, tokens: list[str]) -> None:
    line = numbers_line(column, tokens)
    assert_same(line)
    assert_reader_agrees(line)


def test_ints_above_2_53_are_exact_when_all_ints() -> None:
    # Unknown and action columns keep int64 when every value is an int: no float involved.
    for column in ("x", "actions"):
        line = numbers_line(column, ["9007199254740993", "2"])
        assert assert_same(line)


def test_float_whose_integer_part_is_a_multiple_of_2_64() -> None:
    """18446744073709551616 is 2**64: its 64-bit digit accumulator wraps to 0 exactly."""
    for tokens in (
        ["18446744073709551616.0", "1.5"],  # native read 0.0
        ["18446744073709551616.5", "1.5"],  # native read 0.5
        ["36893488147419103232e0", "1.5"],  # 2**65: native read 0.0
    ):
        for column in ("rewards", "x"):
            assert_same(numbers_line(column, tokens))


# -- 5: lines native must decline ------------------------------------------------------

BASE = json.dumps({"type": "SampleBatch", **small_columns(3)})
N3 = sample_line(3)
MA = json.dumps(json.loads(multi_agent(small_columns(3))))
B64 = small_columns(3)["obs"]  # the compressed obs column in BASE


def _sub(text: str, old: str, new: str) -> bytes:
    assert old in text, old
    return (text.replace(old, new, 1) + "\n").encode()


def _with(members: str) -> bytes:
    """BASE with ``members`` (JSON text) added after its "type"."""
    return _sub(BASE, '"type": "SampleBatch"', '"type": "SampleBatch", ' + members)


def _policy_with(members: str) -> bytes:
    """MA with the default policy's object starting with ``members`` (JSON text)."""
    return _sub(MA, '"default_policy": {', '"default_policy": {' + members)


def _packed(arr: np.ndarray, codec: str = "offrl") -> str:
    """A compressed column as JSON text."""
    return json.dumps(encode_column(arr, codec))  # type: ignore[arg-type]


DECLINED: dict[str, bytes] = {
    "nan": sample_line(3, rewards="[NaN, 1.0, 2.0]"),
    "infinity": sample_line(3, rewards="[1.0, Infinity, 2.0]"),
    "minus-infinity": sample_line(3, x="[1.0, -Infinity, 2.0]"),
    "escape-in-key": _sub(BASE, '"rewards"', '"\\u0072ewards"'),
    "escape-in-unknown-key": sample_line(3, **{"x\\u0041": "[1, 2, 3]"}),
    "escape-in-type": _sub(BASE, '"SampleBatch"', '"Sample\\u0042atch"'),
    "non-ascii-key": sample_line(3, **{"\u00e9": "[1, 2, 3]"}),
    "non-ascii-type": _sub(BASE, '"SampleBatch"', '"SampleBatch\u00e9"'),
    "null-in-array": sample_line(3, rewards="[1.0, null, 2.0]"),
    "object-in-array": sample_line(3, x="[1, {}, 2]"),
    "string-in-array": sample_line(3, x='[1, "a", 2]'),
    "array-of-strings": sample_line(3, x='["a", "b", "c"]'),
    "ragged-2d": sample_line(3, action_dist_inputs="[[1.0, 2.0], [3.0], [4.0, 5.0]]"),
    "ragged-unknown": sample_line(3, x="[[1], [2, 3], [4]]"),
    "3d-nesting": sample_line(3, obs="[[[1.0]], [[2.0]], [[3.0]]]"),
    "3d-in-second-row": sample_line(3, x="[[1, 2], [[3], 4], [5, 6]]"),
    "scalar-among-rows": sample_line(3, x="[[1, 2], 3, [5, 6]]"),
    "row-among-scalars": sample_line(3, x="[1, [2], 3]"),
    "int-above-int64": sample_line(3, eps_id="[9223372036854775808, 1, 2]"),
    "int-below-int64": sample_line(3, eps_id="[-9223372036854775809, 1, 2]"),
    "int-beyond-uint64": sample_line(3, x="[1, 2, 123456789012345678901234567890]"),
    "empty-array": sample_line(3, x="[]"),
    "empty-record": b'{"type": "SampleBatch", "obs": [], "actions": [], "rewards": []}\n',
    "empty-row": sample_line(3, x="[[1], [], [2]]"),
    "empty-first-row": sample_line(3, x="[[], [1], [2]]"),
    "empty-infos": sample_line(3, infos="[]"),
    "duplicate-key": _sub(BASE, '"rewards":', '"rewards": [9.0, 9.0, 9.0], "rewards":'),
    "duplicate-type": _sub(BASE, '"type": "SampleBatch"', '"type": "X", "type": "SampleBatch"'),
    "seq-lens": sample_line(3, seq_lens="[3]"),
    "non-empty-infos": sample_line(3, infos='[{}, {"a": 1}, {}]'),
    "infos-of-lists": sample_line(3, infos="[[], [], []]"),
    "infos-object": sample_line(3, infos="{}"),
    "bytes-repr-wrapper": sample_line(3, obs=json.dumps(f"b'{encode_column(np.zeros((3, 2)))}'")),
    "unknown-type": _sub(BASE, '"SampleBatch"', '"Episode"'),
    "no-type": (json.dumps(small_columns(3)) + "\n").encode(),
    "type-not-a-string": _sub(BASE, '"type": "SampleBatch"', '"type": 1'),
    "trailing-garbage": (BASE + " x\n").encode(),
    "two-objects": (BASE + BASE + "\n").encode(),
    "trailing-nul": (BASE + "\x00").encode(),
    "nul-inside": _sub(BASE, '"rewards"', '"rew\x00ards"'),
    "top-level-array": b"[1, 2, 3]\n",
    "empty-line": b"\n",
    "truncated": (BASE[:-20] + "\n").encode(),
    "trailing-comma-array": sample_line(3, x="[1, 2, 3, ]"),
    "trailing-comma-object": (BASE[:-1] + ", }\n").encode(),
    "leading-zero": sample_line(3, x="[01, 2, 3]"),
    "bare-point": sample_line(3, rewards="[1., 2.0, 3.0]"),
    "leading-point": sample_line(3, rewards="[.5, 2.0, 3.0]"),
    "plus-sign": sample_line(3, rewards="[+1.0, 2.0, 3.0]"),
    "lone-minus": sample_line(3, rewards="[-, 2.0, 3.0]"),
    "bare-exponent": sample_line(3, rewards="[1e, 2.0, 3.0]"),
    "single-quotes": _sub(BASE, '"rewards"', "'rewards'"),
    "unquoted-key": _sub(BASE, '"rewards"', "rewards"),
    "capital-true": sample_line(3, dones="[False, False, True]"),
    "truncated-true": sample_line(3, dones="[false, false, tru]"),
    "missing-comma": sample_line(3, x="[1 2, 3]"),
    "number-column": _with('"count": 3'),
    "plain-string-column": _with('"a": "b"'),
    "bool-column": _with('"a": true'),
    "object-column": _with('"a": {}'),
    "float-in-id": sample_line(3, eps_id="[1, 2.5, 3]"),
    "float-in-flags": sample_line(3, dones="[0.0, 1.0, 0.0]"),
    "two-in-flags": sample_line(3, dones="[0, 2, 1]"),
    "bool-in-float-column": sample_line(3, rewards="[true, 1.0, 2.0]"),
    "bool-in-actions": sample_line(3, actions="[true, false, true]"),
    "bools-and-ints": sample_line(3, x="[true, 1, 0]"),
    "ints-and-bools": sample_line(3, x="[1, true, 0]"),
    "2d-flags": sample_line(3, x="[[true], [false], [true]]"),
    "float32-overflow": sample_line(3, rewards="[1e39, 1.0, 2.0]"),
    "double-overflow": sample_line(3, rewards="[1e400, 1.0, 2.0]"),
    "bad-base64-char": _sub(BASE, B64, B64[:10] + "*" + B64[11:]),
    "bad-base64-length": _sub(BASE, B64, B64 + "A"),
    "base64-pad-in-middle": _sub(BASE, B64, B64[:10] + "=" + B64[11:]),
    "non-ascii-in-base64": _sub(BASE, B64, B64[:10] + "\u00e9" + B64[12:]),
    "escape-in-base64": _sub(BASE, B64, B64[:10] + f"\\u{ord(B64[10]):04x}" + B64[11:]),
    "corrupt-lz4": sample_line(3, obs=json.dumps(encode_column(np.zeros((3, 2)))[:40] + "AAAA")),
    "pyarrow-era": sample_line(3, obs='"BCJNGAAAA"'),
    "two-policies": multi_agent(small_columns(3), ("default_policy", "other")),
    "other-policy": multi_agent(small_columns(3), ("p1",)),
    "policy-batches-in-sample-batch": _with('"policy_batches": {"default_policy": {}}'),
    "multi-agent-without-policies": _sub(MA, '"policy_batches"', '"policy_batchez"'),
    "multi-agent-nested-type": _policy_with('"type": "SampleBatch", '),
    "multi-agent-duplicate-policy": _policy_with('}, "default_policy": {'),
    "policy-not-an-object": _sub(MA, '"default_policy": ', '"default_policy": 3, "x": '),
    "too-many-keys": sample_line(3, **{f"k{i}": "[1, 2, 3]" for i in range(70)}),
}


@pytest.mark.parametrize("name", list(DECLINED))
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_lines_native_cannot_prove_are_declined(name: str) -> None:
    line = DECLINED[name]
    if name != "corrupt-lz4":  # valid base64: the C part passes the frame on, LZ4 refuses it
        assert _linedec.decode(line, KINDS) is None
    assert native.native_columns(line, PayloadTemplates()) is None
    assert_reader_agrees(line)


# Lines with an integer beyond 64 bits: decode_record reads it as a float (orjson) and
# gives a batch or a DataFormatError.
BEYOND_64_BITS: dict[str, bytes] = {
    "int-below-int64": DECLINED["int-below-int64"],
    "int-beyond-uint64": DECLINED["int-beyond-uint64"],
    "rewards-10**23": numbers_line("rewards", ["100000000000000000000000", "1.0"]),
    "unknown-2**64": numbers_line("x", ["18446744073709551616"]),
}


@pytest.mark.parametrize("name", list(BEYOND_64_BITS))
def test_reader_agrees_on_integers_beyond_64_bits(name: str) -> None:
    """Native declines these; the reader must then still give decode_record's outcome.

    (pysimdjson raises RuntimeError("BIGINT_ERROR: ...") while parsing such a line: the
    reader must take the reference path, not pass that error on.)
    """
    line = BEYOND_64_BITS[name]
    assert native.native_columns(line, PayloadTemplates()) is None
    assert_reader_agrees(line)


def test_declined_lines_differ_from_a_taken_one_only_in_the_feature() -> None:
    # The bases of the cases above are taken: each case is declined for its own feature.
    for line in ((BASE + "\n").encode(), N3, (MA + "\n").encode()):
        assert assert_same(line)


# Lines native may take (then they must agree) or decline.
EDGES: dict[str, bytes] = {
    "null-column": sample_line(3, state_in="null"),
    "flags-as-ints": sample_line(3, dones="[0, 0, 1]", truncateds="[0, 1, 0]"),
    "floats-from-ints": sample_line(3, rewards="[1, 2, 3]", action_prob="[1, 0.5, 2]"),
    "int-obs": sample_line(3, obs="[[1, 2], [3, 4], [5, 6]]"),
    "1d-obs": sample_line(3, obs="[0.5, 1.5, 2.5]"),
    "2d-ids": sample_line(3, eps_id="[[1, 2], [3, 4], [5, 6]]"),
    "2d-actions-mixed": sample_line(3, actions="[[1, 2], [3, 4.5], [5, 6]]"),
    "unknown-2d-ints-then-float": sample_line(3, extra="[[1, 2], [3, 4.5], [5, 6]]"),
    "different-lengths": sample_line(3, rewards="[1.0, 2.0]"),
    "missing-required": b'{"type": "SampleBatch", "obs": [1.0], "rewards": [1.0], "dones": [true]}',
    "no-dones": b'{"type": "SampleBatch", "obs": [1.0], "actions": [1], "rewards": [1.0]}',
    "empty-object-record": b'{"type": "SampleBatch"}',
    "only-empty-policy": b'{"type": "MultiAgentBatch", "policy_batches": {"default_policy": {}}}',
    "compressed-uint8-obs": sample_line(3, obs=_packed(np.arange(6, dtype=np.uint8).reshape(3, 2))),
    "compressed-float64-rewards": sample_line(
        3, rewards=_packed(np.array([1.0, 0.5, 2.0]), "rllib")
    ),
    "compressed-int-actions": sample_line(
        3, actions=_packed(np.array([1, 0, 1], np.int32), "rllib")
    ),
    "compressed-wrong-length": sample_line(3, obs=_packed(np.zeros((2, 2), np.float32))),
    "compressed-infos": sample_line(3, infos=_packed(np.zeros(3))),
    "compressed-unknown": sample_line(3, x=_packed(np.zeros((3, 2), np.int16))),
    "whitespace-everywhere": (
        b' \t{ "type" :\t"SampleBatch" ,\n"obs" : [ [ 1.0 , 2 ] ,\r\n[3 ,4] ] , '
        b'"actions" : [ 0 , 1 ] , "rewards" : [ 1 , 2.5 ] , "dones" :[ false ,true ] , '
        b'"infos" : [ { } , {\n} ] } \r\n'
    ),
    "compact": (
        b'{"type":"SampleBatch","obs":[[1.0,2],[3,4]],"actions":[0,1],"rewards":[1,2.5],'
        b'"dones":[false,true],"infos":[{},{}]}'
    ),
    "type-last": b'{"obs":[1.0],"actions":[0],"rewards":[1],"dones":[true],"type":"SampleBatch"}',
    "multi-agent-type-last": (
        b'{"policy_batches":{"default_policy":{"obs":[1.0],"actions":[0],"rewards":[1],'
        b'"dones":[true]}},"count":1,"type":"MultiAgentBatch"}'
    ),
    "multi-agent-extra-top-level": _sub(MA, '"count":', '"extra": [[1]], "n": null, "count":'),
    "int64-min-in-float": sample_line(3, rewards="[-9223372036854775808, 1, 2]"),
    "utf8-elsewhere": _sub(MA, '"count":', '"note": "\u00e9", "count":'),
}


@pytest.mark.parametrize("name", list(EDGES))
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_edge_lines_agree_or_are_declined(name: str) -> None:
    assert_same(EDGES[name])
    assert_reader_agrees(EDGES[name])


def test_common_edge_lines_are_taken() -> None:
    common = [
        "null-column",
        "flags-as-ints",
        "floats-from-ints",
        "whitespace-everywhere",
        "compact",
        "type-last",
        "multi-agent-type-last",
        "multi-agent-extra-top-level",
        "compressed-uint8-obs",
        "compressed-float64-rewards",
        "compressed-int-actions",
    ]
    for name in common:
        assert assert_same(EDGES[name]), name


def test_records_that_break_the_format_go_to_the_reference() -> None:
    """Missing required columns or unequal lengths: native declines, the reference words it."""
    for name in ("different-lengths", "missing-required", "empty-object-record"):
        assert via_native(EDGES[name]) is None, name
        assert_reader_agrees(EDGES[name])


def test_multi_agent_policy_with_a_number_value() -> None:
    """decode_record refuses a non-column value among the policy's columns: native must too."""
    cols = small_columns(3)
    for value in (5, "abc", True, 1.5):
        line = multi_agent({**cols, "foo": value})
        assert isinstance(reference(line), Exception)
        assert_same(line)  # native took it and dropped "foo"


FLAGS_ONLY = '"terminateds": [false, true], "truncateds": [false, false]'


@pytest.mark.parametrize(
    "line",
    [
        ('{"type": "SampleBatch", "obs": [1.0, 2.0], "actions": [0, 1], ' + FLAGS_ONLY + "}"),
        (
            '{"type": "SampleBatch", "obs": [1.0, 2.0, 3.0], "actions": [0, 1, 0], '
            '"rewards": [1.0, 1.0, 1.0], ' + FLAGS_ONLY + "}"
        ),
    ],
    ids=["missing-rewards", "flags-shorter"],
)
def test_errors_are_worded_like_the_reference(line: str) -> None:
    """RecordDecoder promises decode_record's errors, wording included (the columns found).

    The C decoder adds ``dones``; a record it would add them to but that breaks the
    format is declined, so the error lists the line's own columns.
    """
    assert via_native(line.encode()) is None
    assert_reader_agrees(line.encode())


def test_multi_agent_policy_with_a_type_array() -> None:
    """decode_record drops a "type" key among the policy's columns: native must not keep it."""
    line = multi_agent({**small_columns(3), "type": [1, 2, 3]})
    assert isinstance(reference(line), SampleBatch)
    assert_same(line)  # native kept "type" as a column


# -- 6: robustness against truncation and corruption -----------------------------------

_NOISE = b'[]{},:"-.eE0123456789 tfn\\\x00'


# Where the extension can leave columns out (KIND_SKIP), decode a projection too.
_PROJECTION = (
    native.native_kinds(frozenset({"obs", "actions", "rewards", "t"}))
    if hasattr(native, "native_kinds") and hasattr(_linedec, "KIND_SKIP")
    else None
)


def _check_robust(line: bytes, templates: PayloadTemplates) -> bool:
    result = _linedec.decode(line, KINDS)
    assert result is None or type(result) is dict
    if _PROJECTION is not None:
        part = _linedec.decode(line, *_PROJECTION)
        assert part is None or type(part) is dict
        if part is not None and result is not None:  # a projection reads columns alike
            for name, value in part.items():
                full = result[name]
                assert type(value) is type(full), name
                if isinstance(value, np.ndarray):
                    assert (value.dtype, value.shape) == (full.dtype, full.shape), name
                    same = value.tolist() == full.tolist() if value.dtype == object else None
                    assert same or value.tobytes() == full.tobytes(), name
                else:
                    assert value == full, name
    return assert_same(line, templates)


@pytest.mark.parametrize("kind", ["sample-batch", "multi-agent"])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_prefixes_and_mutations_never_crash_and_agree(kind: str) -> None:
    if kind == "sample-batch":
        line = small_line(10, seed=5)
    else:
        line = multi_agent(small_columns(10, seed=5))
    templates = PayloadTemplates()
    assert _check_robust(line, templates)
    for cut in range(len(line)):
        _check_robust(line[:cut], templates)
    rnd = random.Random(21)
    taken = 0
    for _ in range(2000):
        pos = rnd.randrange(len(line))
        mutated = line[:pos] + bytes([rnd.randrange(256)]) + line[pos + 1 :]
        taken += _check_robust(mutated, templates)
    for _ in range(500):
        pos = rnd.randrange(len(line) + 1)
        inserted = line[:pos] + bytes([rnd.choice(_NOISE)]) + line[pos:]
        taken += _check_robust(inserted, templates)
    assert taken > 150  # ~10%: a digit changed into another inside a number or base64


# -- 7: generated records --------------------------------------------------------------


# (name, JSON text; N is the row count) of columns native must decline.
_GENERATED_DECLINED = [
    ("bad", "[NaN]"),
    ("bad", "[1, null]"),
    ("bad", "[[1], [2, 3]]"),
    ("bad", "[[[1]]]"),
    ("bad", "[]"),
    ("bad\\u0041", "[1]"),
    ("bad", '"not compressed"'),
    ("seq_lens", "[N]"),
    ("infos", '[{"a": 1}]'),
    ("eps_id", "[9223372036854775808]"),
]


class _Gen:
    """Random records of mixed column kinds, shapes and JSON spellings."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def ws(self) -> str:
        r = self.r.random()
        if r < 0.5:
            return ""
        if r < 0.85:
            return " "
        return self.r.choice(["\t", "\n", "\r\n", "  ", " \t\n ", "\n\t"])

    def int_token(self, big: bool = False) -> str:
        r = self.r.random()
        if big and r < 0.2:
            return str(self.r.choice([-1, 1]) * self.r.getrandbits(self.r.randint(1, 63)))
        if r < 0.05:
            return "-0"
        return str(self.r.randint(-5, 1000) if r < 0.8 else self.r.randint(-(2**31), 2**31))

    def float_token(self) -> str:
        r = self.r.random()
        if r < 0.3:
            return repr(self.r.uniform(-10, 10))
        if r < 0.6:
            return repr(float(np.float32(self.r.gauss(0, 1))))
        if r < 0.7:
            return self.r.choice(["0.0", "-0.0", "1.0", "0e5", "1E+2", "-2.5e-3", "0.000123"])
        if r < 0.85:
            digits = "".join(self.r.choice("0123456789") for _ in range(self.r.randint(1, 22)))
            return f"{self.r.choice(['', '-'])}{self.r.randint(0, 9)}.{digits}"
        e = self.r.choice("eE")
        return f"{self.r.randint(1, 9)}.{self.r.randint(0, 999)}{e}{self.r.randint(-30, 30)}"

    def bool_token(self) -> str:
        return self.r.choice(["true", "false"])

    def scalars(self, kind: str) -> Callable[[], str]:
        """A token source for one column: kind in float/int/bigint/bool/flag/mixed."""
        if kind == "float":
            return lambda: self.float_token() if self.r.random() < 0.9 else self.int_token()
        if kind == "int":
            return self.int_token
        if kind == "bigint":
            return lambda: self.int_token(big=True)
        if kind == "bool":
            return self.bool_token
        if kind == "flag01":
            return lambda: self.r.choice(["0", "1"])
        # ints and floats mixed (np.asarray makes them all float64)
        return lambda: self.int_token() if self.r.random() < 0.5 else self.float_token()

    def array(self, n: int, width: int, token: Callable[[], str]) -> str:
        w = self.ws

        def seq(items: list[str]) -> str:
            return "[" + w() + (w() + "," + w()).join(items) + w() + "]"

        if width == 0:
            return seq([token() for _ in range(n)])
        return seq([seq([token() for _ in range(width)]) for _ in range(n)])

    def width(self) -> int:
        return 0 if self.r.random() < 0.5 else self.r.randint(1, 4)

    def columns(self, n: int) -> dict[str, str]:
        r = self.r
        cols: dict[str, str] = {}
        if r.random() < 0.25:
            arr = np.asarray(np.random.default_rng(r.randrange(2**32)).normal(size=(n, 3)))
            codec = r.choice(["rllib", "offrl"])
            cols["obs"] = json.dumps(encode_column(arr.astype(r.choice(["f4", "f8"])), codec))
        else:
            cols["obs"] = self.array(n, r.choice([0, 1, 2, 4]), self.scalars("float"))
        cols["actions"] = self.array(
            n, self.width() if r.random() < 0.3 else 0, self.scalars(r.choice(["int", "float"]))
        )
        cols["rewards"] = self.array(n, 0, self.scalars("float"))
        if r.random() < 0.5:
            cols["dones"] = self.array(n, 0, self.scalars("bool" if r.random() < 0.8 else "flag01"))
        else:
            cols["terminateds"] = self.array(n, 0, self.scalars("bool"))
            cols["truncateds"] = self.array(n, 0, self.scalars("bool"))
        for name in ("eps_id", "t", "agent_index", "unroll_id"):
            if r.random() < 0.5:
                cols[name] = self.array(n, 0 if r.random() < 0.9 else 2, self.scalars("bigint"))
        for name in ("action_logp", "action_dist_inputs", "prev_rewards", "new_obs"):
            if r.random() < 0.3:
                width = 2 if name == "action_dist_inputs" else 0
                cols[name] = self.array(n, width, self.scalars("float"))
        if r.random() < 0.3:
            cols["prev_actions"] = self.array(n, 0, self.scalars("int"))
        if r.random() < 0.6:
            w = self.ws
            cols["infos"] = "[" + w() + ",".join("{" + w() + "}" for _ in range(n)) + w() + "]"
        for j in range(r.randint(0, 3)):
            kind = r.choice(["float", "int", "bigint", "bool", "mixed"])
            cols[f"u{j}"] = self.array(n, 0 if kind == "bool" else self.width(), self.scalars(kind))
        if r.random() < 0.1:
            cols["state_in"] = "null"
        if r.random() < 0.03:  # a length mismatch: both must raise the same error
            cols["rewards"] = self.array(n + 1, 0, self.scalars("float"))
        if r.random() < 0.1:  # something native must leave to the other paths
            name, text = r.choice(_GENERATED_DECLINED)
            cols[name] = text.replace("N", str(n))
        return cols

    def obj(self, members: list[tuple[str, str]]) -> str:
        w = self.ws
        body = (w() + "," + w()).join(f'"{k}"{w()}:{w()}{v}' for k, v in members)
        return "{" + w() + body + w() + "}"

    def line(self) -> bytes:
        r = self.r
        n = r.randint(1, 6)
        members = list(self.columns(n).items())
        r.shuffle(members)
        if r.random() < 0.15:
            top = [("policy_batches", self.obj([("default_policy", self.obj(members))]))]
            top += [("type", '"MultiAgentBatch"'), ("count", str(n))]
            r.shuffle(top)
            text = self.obj(top)
        else:
            members.insert(r.randint(0, len(members)), ("type", '"SampleBatch"'))
            text = self.obj(members)
        return (self.ws() + text + self.ws()).encode()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_generated_records_agree() -> None:
    gen = _Gen(seed=31)
    templates = PayloadTemplates()
    total, taken, errors = 1500, 0, 0
    for _ in range(total):
        line = gen.line()
        took = _check_robust(line, templates)  # the projection too, where there is one
        taken += took
        errors += took and isinstance(reference(line), Exception)
        if not took:
            assert_reader_agrees(line)
    assert taken >= total * 0.8, f"native took only {taken} of {total} generated lines"
    assert taken < total  # the lines given something native must decline were declined
    assert errors > 0  # some length mismatches were taken and raised the reference's error


# -- 8: the C function takes bytes only ------------------------------------------------


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: b.decode()])
def test_decode_requires_bytes(wrap: Callable[[bytes], Any]) -> None:
    line = small_line(3)
    assert _linedec.decode(line, KINDS) is not None
    with pytest.raises(TypeError):
        _linedec.decode(wrap(line), KINDS)


def test_decode_requires_a_kinds_dict() -> None:
    with pytest.raises(TypeError):
        _linedec.decode(small_line(3), list(KINDS.items()))


# -- 9: a line as a span of a larger read -------------------------------------------------


def _three_lines() -> tuple[bytes, list[tuple[int, int]]]:
    rng = np.random.default_rng(3)
    lines = [
        (json.dumps(cartpole_record(rng, 5, codec)) + "\n").encode()
        for codec in ("rllib", None, "offrl")
    ]
    buf = b"".join(lines)
    bounds, pos = [], 0
    for line in lines:
        bounds.append((pos, pos + len(line)))
        pos += len(line)
    return buf, bounds


def test_span_decodes_like_the_sliced_line() -> None:
    """decode(buf, ..., start, stop) reads buf[start:stop] in place, as if sliced."""
    buf, bounds = _three_lines()
    for start, stop in bounds:
        whole = _linedec.decode(buf[start:stop], native._KINDS)
        span = _linedec.decode(buf, native._KINDS, _linedec.KIND_GENERIC, start, stop)
        assert whole is not None and span is not None
        assert list(span) == list(whole)
        for name in whole:
            assert type(span[name]) is type(whole[name])
            if isinstance(whole[name], np.ndarray) and whole[name].dtype != object:
                assert (
                    np.array_equal(span[name], whole[name])
                    and span[name].dtype == whole[name].dtype
                )
            elif not isinstance(whole[name], np.ndarray):
                assert span[name] == whole[name]


def test_span_that_does_not_end_with_its_record_is_declined() -> None:
    """A span cut inside a record, or holding two records, is never read past its end."""
    buf, bounds = _three_lines()
    (s0, e0), (s1, e1) = bounds[0], bounds[1]
    assert _linedec.decode(buf, native._KINDS, 0, s0, e0 - 20) is None  # cut short
    assert _linedec.decode(buf, native._KINDS, 0, s0, e1) is None  # two records
    assert _linedec.decode(buf, native._KINDS, 0, s1 + 1, e1) is None  # not at a record start
    for start, stop in ((-1, 5), (5, 4), (0, len(buf) + 1)):
        with pytest.raises(ValueError, match="start <= stop"):
            _linedec.decode(buf, native._KINDS, 0, start, stop)


def test_record_decoder_span_equals_decode() -> None:
    """RecordDecoder.decode_span gives decode's batch, native or not (a NaN line)."""
    buf, bounds = _three_lines()
    nan_line = sample_line(3, rewards="[NaN, 1.0, 2.0]")
    buf2 = buf + nan_line
    bounds2 = [*bounds, (len(buf), len(buf2))]
    for start, stop in bounds2:
        got = RecordDecoder().decode_span(buf2, start, stop, path=PATH, lineno=LINENO)
        want = RecordDecoder().decode(buf2[start:stop], path=PATH, lineno=LINENO)
        assert_outcomes_equal(got, want, buf2[start:stop], same_message=True)


# -- 10: compressed columns whose payload is a 0-d array ------------------------------------

ZERO_D = zero_d_columns()


@pytest.mark.parametrize("payload", list(ZERO_D))
@pytest.mark.parametrize("name", ["obs", "new_obs", "rewards", "actions", "dones", "q_values"])
def test_0d_compressed_column_is_declined(name: str, payload: str) -> None:
    """Not per-step values: native leaves the line to the paths that word the error."""
    line = sample_line(3, **{name: json.dumps(ZERO_D[payload])})
    want = reference(line)
    assert type(want) is DataFormatError, want
    assert f"column {name!r} must be a list of per-step values" in str(want)
    templates = PayloadTemplates()
    for _ in range(2):  # also once the payload's layout is a learned template
        assert native.native_columns(line, templates) is None
        requested = native.native_kinds(frozenset({name}) | native.ALWAYS_READ)
        assert native.native_columns(line, templates, *requested) is None
        assert via_native(line, templates) is None


@pytest.mark.parametrize("payload", list(ZERO_D))
def test_0d_compressed_column_left_out_by_a_projection_is_never_read(payload: str) -> None:
    line = sample_line(3, q_values=json.dumps(ZERO_D[payload]))
    skipped = native.native_kinds(frozenset({"obs"}) | native.ALWAYS_READ)
    cols = native.native_columns(line, PayloadTemplates(), *skipped)
    assert cols is not None and "q_values" not in cols
    assert_outcomes_equal(
        finish_columns(cols, PATH, LINENO), reference(sample_line(3)), line, same_message=True
    )


# -- 11: compressed observation columns built in C -------------------------------------------


def _obs_line(obs: np.ndarray, codec: str = "rllib", **extra: str) -> bytes:
    """A record whose obs is compressed with ``codec`` and whose other columns are lists."""
    n = len(obs)
    members = {
        "type": '"SampleBatch"',
        "obs": _packed(obs, codec),
        "actions": json.dumps([j % 2 for j in range(n)]),
        "rewards": json.dumps([1.0] * n),
        "dones": json.dumps([False] * n),
        **extra,
    }
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in members.items()) + "}\n").encode()


def _decode_columns(line: bytes, templates: PayloadTemplates) -> tuple[dict, int] | None:
    return _linedec.decode_columns(line, KINDS, 0, 0, len(line), templates.by_length)


@pytest.mark.parametrize("codec", ["rllib", "offrl"])
def test_compressed_obs_is_built_in_c_once_its_layout_is_learned(codec: str) -> None:
    rng = np.random.default_rng(11)
    templates = PayloadTemplates()
    first = _obs_line(rng.normal(size=(5, 4)).astype(np.float32), codec)
    cols, state = _decode_columns(first, templates)  # type: ignore[misc]
    assert state == native.PENDING and type(cols["obs"]) is bytes  # no template: Python decodes
    assert assert_same(first, templates)  # ... and learns the layout
    for _ in range(3):
        line = _obs_line(rng.normal(size=(5, 4)).astype(np.float32), codec)
        cols, state = _decode_columns(line, templates)  # type: ignore[misc]
        assert state == native.CHECKED  # no new_obs or truncateds: finish_checked adds them
        assert type(cols["obs"]) is np.ndarray and cols["obs"].dtype == np.float32
        want = reference(line)
        assert isinstance(want, SampleBatch)
        assert cols["obs"].tobytes() == want["obs"].tobytes()
        assert cols["obs"].flags.writeable and cols["obs"].flags.aligned
        assert assert_same(line, templates)


@pytest.mark.parametrize("dtype", [">f4", "<f8", "<i8"])
def test_compressed_obs_of_another_dtype_is_left_to_python(dtype: str) -> None:
    """Only native float32 is kept as it is; the Python path converts the rest."""
    templates = PayloadTemplates()
    for seed in range(3):
        obs = np.random.default_rng(seed).normal(size=(4, 3)).astype(dtype)
        line = _obs_line(obs, "rllib")
        decoded = _decode_columns(line, templates)
        assert decoded is not None and decoded[1] == native.PENDING
        assert type(decoded[0]["obs"]) is bytes
        assert assert_same(line, templates)
        assert_reader_agrees(line)


@pytest.mark.parametrize(
    "extra",
    [
        {"actions": "[0, 1, 0]"},  # 3 actions, 5 obs
        {"weights": "[1.0, 2.0]"},  # an extra column of another length
    ],
)
def test_final_columns_of_unequal_length_are_declined(extra: dict[str, str]) -> None:
    templates = PayloadTemplates()
    obs = np.zeros((5, 4), dtype=np.float32)
    assert assert_same(_obs_line(obs), templates)  # learn the layout
    line = _obs_line(obs, **extra)
    assert _decode_columns(line, templates) is None
    assert via_native(line, templates) is None
    assert_reader_agrees(line)  # the reference path words the error


def test_final_columns_missing_a_required_column_are_declined() -> None:
    templates = PayloadTemplates()
    obs = np.zeros((2, 4), dtype=np.float32)
    assert assert_same(_obs_line(obs), templates)
    line = _obs_line(obs).replace(b'"rewards"', b'"rewardz"')
    assert _decode_columns(line, templates) is None
    assert_reader_agrees(line)


def test_b64decode_simd_agrees_with_the_scalar_loop() -> None:
    rnd = random.Random(5)
    for size in [*range(0, 80), 300, 1000]:
        raw = rnd.randbytes(size)
        text = base64.b64encode(raw)
        want = raw if text else None
        assert _linedec.b64decode(text) == _linedec.b64decode(text, False) == want
    text = base64.b64encode(rnd.randbytes(75))  # 100 characters: SIMD blocks and a tail
    for pos in range(len(text)):
        for value in range(256):
            changed = text[:pos] + bytes([value]) + text[pos + 1 :]
            got = _linedec.b64decode(changed)
            assert got == _linedec.b64decode(changed, False), (pos, value)
            if got is not None:
                assert got == base64.b64decode(changed, validate=True), (pos, value)
            elif value in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/":
                raise AssertionError(f"a base64 character refused at {pos}: {value}")


def test_key_names_reused_by_position_stay_correct() -> None:
    """Names are cached by their position in the line: other keys there must not match."""
    columns = small_columns(4, seed=2)
    names = list(columns)
    rnd = random.Random(8)
    templates = PayloadTemplates()
    for _ in range(30):
        rnd.shuffle(names)
        renamed = {  # "xinfos" would be a generic column of objects: declined
            ("x" + k if k != "infos" and rnd.random() < 0.2 else k): columns[k] for k in names
        }
        renamed.update({k: columns[k] for k in ("obs", "actions", "rewards", "terminateds")})
        line = (json.dumps({"type": "SampleBatch", **renamed}) + "\n").encode()
        assert assert_same(line, templates)


def test_every_changed_character_of_a_compressed_obs_agrees() -> None:
    """Changes inside the base64 text reach the LZ4 frame and the payload decoded in C."""
    obs = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    line = _obs_line(obs)
    templates = PayloadTemplates()
    assert assert_same(line, templates)
    text = _packed(obs, "rllib")[1:-1].encode()
    start = line.index(text)
    rnd = random.Random(3)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    built = 0
    for pos in range(start, start + len(text)):
        for value in rnd.sample(alphabet, 3):
            changed = line[:pos] + bytes([value]) + line[pos + 1 :]
            decoded = _decode_columns(changed, templates)
            built += decoded is not None and decoded[1] != native.PENDING
            assert_same(changed, templates)
    assert built > 0  # changes inside the array's data keep the layout


# -- 12: repeated numbers are compared, not parsed again -------------------------------------


@pytest.mark.parametrize(
    "tokens",
    [
        ["5", "5", "5", "6", "5"],  # a repeat, then a different number: parsed from there
        ["12", "12", "123", "12"],  # the same first digits, longer
        ["1.0", "1.0", "1.00", "1.0"],
        ["1", "1", "1e5", "1"],
        ["1", "1", "1.5", "1"],  # ints, then a float: all become floats
        ["-0.0", "-0.0", "-0.0"],
        ["0", "0", "-0", "0"],
        ["9007199254740993", "9007199254740993", "1.5"],  # inexact ints, then a float
        ["9223372036854775807", "9223372036854775807", "9223372036854775808"],
        ["1E2", "1E2", "1e2"],
    ],
)
@pytest.mark.parametrize("column", ["rewards", "eps_id", "actions", "x"])
def test_repeated_numbers_agree(column: str, tokens: list[str]) -> None:
    line = numbers_line(column, tokens)
    taken = assert_same(line)
    # a generic column takes all of these but ints beyond int64 or beyond 2^53 mixed
    # with floats (the reference decides those)
    assert taken or column != "x" or tokens[0].startswith("9")
    assert_reader_agrees(line)


def test_repeated_rows_agree() -> None:
    for text in ("[[1, 1], [1, 1], [1, 2]]", "[[0.5, 0.5], [0.5, 0.5]]", "[[3], [3], [3, 3]]"):
        line = sample_line(3 if text.count("[") == 4 else 2, x=text)
        assert_same(line)
        assert_reader_agrees(line)


# -- 13: every float is read as Python's nearest double, before the cast to float32 ------------


def _float_tokens(rnd: random.Random, count: int) -> list[str]:
    """Random doubles and float32 values as Python prints them, and decimals of 1-40
    digits (leading zeros, long fractions, exponents): every path of parse_number."""
    tokens = []
    while len(tokens) < count:
        kind = rnd.randrange(4)
        if kind == 0:
            x = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
        elif kind == 1:
            x = struct.unpack("<f", struct.pack("<I", rnd.getrandbits(32)))[0]
        if kind <= 1:
            if math.isfinite(x):
                tokens.append(repr(x))
            continue
        whole = rnd.choice(["0", str(rnd.randrange(1, 10 ** rnd.randint(1, 20)))])
        zeros = "0" * rnd.choice([0, 0, 1, 3, 20]) if whole == "0" else ""
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 40)))
        exponent = f"e{rnd.randint(-320, 300)}" if kind == 3 else ""
        tokens.append(f"{rnd.choice(['', '-'])}{whole}.{zeros}{digits}{exponent}")
    return tokens


def test_floats_are_read_as_the_nearest_double() -> None:
    rnd = random.Random(13)
    for token in _float_tokens(rnd, 40_000):
        want = float(token)
        for after in (b"", b", 1.5, 2.5]", b"]" + b" " * 40):  # what follows matters to SIMD
            got = _linedec.parse_double(token.encode() + after)
            if math.isinf(want):
                assert got is None or got == want, token
                continue
            assert got is not None, token
            assert struct.pack("<d", got) == struct.pack("<d", want), (token, got, want)


def test_complete_records_need_no_finishing() -> None:
    """STATE_COMPLETE: both flags, dones and new_obs are there, so the batch is final."""
    templates = PayloadTemplates()
    rng = np.random.default_rng(5)
    record = cartpole_record(rng, 20, "rllib")
    line = (json.dumps(record) + "\n").encode()
    assert assert_same(line, templates)  # learns the obs layout
    cols, state = _decode_columns(line, templates)  # type: ignore[misc]
    assert state == native.COMPLETE
    want = reference(line)
    assert isinstance(want, SampleBatch)
    assert_outcomes_equal(SampleBatch.from_checked(cols), want, line)
    del record["truncateds"]  # dones then has to be made from terminateds alone
    line = (json.dumps(record) + "\n").encode()
    assert _decode_columns(line, templates)[1] == native.CHECKED  # type: ignore[index]
    assert assert_same(line, templates)
    assert_reader_agrees(line)


@pytest.mark.parametrize("codec", ["rllib", "offrl", None])
def test_a_reused_record_decoder_agrees_line_after_line(codec: str | None) -> None:
    """Lines after the first take the compiled path to the end (learned layouts,
    STATE_COMPLETE batches): each still equals decode_record's."""
    rng = np.random.default_rng(9)
    decoder = RecordDecoder()
    for n in (30, 30, 7, 30):
        line = (json.dumps(cartpole_record(rng, n, codec)) + "\n").encode()
        got = decoder.decode_span(line, 0, len(line), path=PATH, lineno=LINENO)
        assert_outcomes_equal(got, reference(line), line, same_message=True)
