/*
 * offrl.io._linedec: a compiled decoder for the common shape of experience lines.
 *
 * decode(line: bytes, kinds: dict[str, int], default_kind: int = KIND_GENERIC,
 *        start: int = 0, stop: int = len(line)) -> dict | None
 *
 * Parses one JSON line holding a SampleBatch record (or a MultiAgentBatch whose only
 * policy is "default_policy") and returns {column: value} in the line's key order:
 *
 *   - numeric / boolean arrays (1-D, or 2-D with rows of equal length) as numpy
 *     arrays, already in the dtype offrl.io.decode's converters give that column
 *     (``kinds`` maps a column name to one of the KIND_* codes below; names not in
 *     it get ``default_kind``);
 *   - columns of KIND_SKIP are left out: only checked to be JSON this parser can
 *     prove valid (else None), never converted;
 *   - ``infos`` written as [{}, {}, ...] as an object array of fresh empty dicts;
 *   - ``dones`` added as terminateds | truncateds when the record has both and no dones;
 *   - a compressed column (a "BCJNG..." base64 string) as the bytes of its LZ4
 *     frame (base64-decoded here, decompressed and decoded by the caller).
 *
 * decode_columns(line, kinds, default_kind, start, stop, templates)
 *     -> (dict, state: int) | None
 *
 * does the same, and also builds compressed KIND_OBS columns here: base64 (16
 * characters at a time with SSSE3), the LZ4 frame (_lz4frame.h, which accepts only
 * frames python-lz4 provably decodes alike) and a payload template learned by
 * offrl.io.templates, into a native float32 array. ``state``: STATE_PENDING, some
 * column was left as an LZ4 frame; STATE_CHECKED, none was, and obs, actions and
 * rewards are present and every column has one length (the caller's checks, done
 * here); STATE_COMPLETE, checked and also holding dones, terminateds, truncateds and
 * new_obs, so that nothing is left to normalise.
 *
 * It returns None for anything it cannot prove it decodes exactly like the reference
 * path (offrl.io.decode.decode_record): other record types, escapes or non-ASCII
 * text in strings, NaN/Infinity tokens, nulls or objects inside arrays, ragged or
 * deeper nesting, integers outside int64, mixtures the reference would convert
 * differently, invalid JSON of any kind. The caller then takes the reference path,
 * which also words the errors. Nothing here calls back into Python code.
 *
 * The line must be a bytes object: its text ends with a NUL byte, so the scanning
 * loops stop there without bounds checks (a NUL is never valid JSON here).
 *
 * Numbers: integers are read exactly; floats are rounded once to the nearest double
 * (Clinger's exact fast path, an x87 extended-precision path with a check that the
 * rounding to double cannot be ambiguous, else CPython's correctly rounded
 * PyOS_string_to_double), then cast to float32 like numpy's astype.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <float.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <tmmintrin.h>
#define HAVE_B64_SSSE3 1 /* compiled for SSSE3, used where the CPU has it */
static int cpu_ssse3;
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_lz4frame.h"

enum { KIND_GENERIC = 0, KIND_FLOAT = 1, KIND_ID = 2, KIND_BOOL = 3, KIND_ACTION = 4,
       KIND_INFOS = 5, KIND_SKIP = 6 /* not read: only checked to be JSON */,
       KIND_OBS = 7 /* KIND_FLOAT, and a compressed float32 array is taken as it is */ };

/* Modes of an array being parsed: what its scalars have been so far. */
enum { M_NONE = 0, M_INT, M_FLOAT, M_BOOL };

typedef struct {
    const char *p;
    const char *end;
} Cursor;

typedef union {
    double d;
    int64_t i;
} Slot;

typedef struct {
    Slot *v;
    Py_ssize_t len, cap;
} Scratch;

static const double P10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                              1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                              1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#if defined(__x86_64__) && LDBL_MANT_DIG == 64
#define HAVE_X87 1
static const long double LP10[] = {
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
    1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
    1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HAVE_SWAR 1
#endif

/* base64: B64Q[j][ch] is the 6-bit value of ch at position j of a quartet, shifted into
   place within 24 bits; characters outside the alphabet have bit 24 set. */
static uint32_t B64Q[4][256];

static inline int is_digit(char ch) { return (unsigned char)(ch - '0') < 10; }

static inline int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }

/* The text is NUL-terminated (a bytes object): loops stop at the NUL without bounds
   checks, and a NUL before the end is never valid JSON here. */
static inline void skip_ws(Cursor *c) {
    while (is_ws(*c->p)) c->p++;
}

/* After an array element: 1 past a ',' and the whitespace after it, 0 at the ']'
   that ends the array (*pp on it), -1 at anything else. */
static inline __attribute__((always_inline)) int next_element(const char **pp) {
    const char *p = *pp;
    if (*p != ',') /* "1, 2": test the comma first, the common case */
        while (is_ws(*p)) p++;
    int more = (*p == ',');
    if (more) {
        p++;
        if (*p == ' ') p++;
        while (is_ws(*p)) p++;
    } else if (*p != ']') {
        return -1;
    }
    *pp = p;
    return more;
}

#ifdef HAVE_SWAR
static inline uint64_t load8(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* All 8 bytes are '0'..'9'. */
static inline int all_digits8(uint64_t v) {
    return ((v & 0xF0F0F0F0F0F0F0F0ULL) |
            (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ==
           0x3333333333333333ULL;
}

/* The value of 8 decimal digits (first digit most significant). */
static inline uint32_t parse8(uint64_t v) {
    const uint64_t mask = 0x000000FF000000FFULL;
    v -= 0x3030303030303030ULL;
    v = (v * 10) + (v >> 8);
    v = (((v & mask) * (100 + (1000000ULL << 32))) +
         (((v >> 16) & mask) * (1 + (10000ULL << 32)))) >> 32;
    return (uint32_t)v;
}
#endif

/* Reads the digits at *pp into *m (wrapping past 19 digits: the caller counts). */
static const uint64_t POW10U[9] = {1,      10,      100,      1000,     10000,
                                    100000, 1000000, 10000000, 100000000};

/* Past the run of digits at p (possibly empty). */
static inline __attribute__((always_inline)) const char *skip_digits(const char *p,
                                                                     const char *end) {
#ifdef __SSE2__
    while (end - p >= 16) {
        __m128i v = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)p), _mm_set1_epi8('0'));
        /* a digit's byte is now 0..9: min(b, 9) == b exactly for those */
        __m128i digit = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(9)), v);
        unsigned other = ~(unsigned)_mm_movemask_epi8(digit) & 0xFFFFu;
        if (other) return p + __builtin_ctz(other);
        p += 16;
    }
#elif defined(HAVE_SWAR)
    while (end - p >= 8) {
        uint64_t w = load8(p);
        /* per byte: 0 for a digit, nonzero otherwise (see all_digits8); a carry only
           reaches bytes after a non-digit, which are never used */
        uint64_t z = ((w & 0xF0F0F0F0F0F0F0F0ULL) |
                      (((w + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ^
                     0x3333333333333333ULL;
        uint64_t nz = (((z & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL) | z) &
                      0x8080808080808080ULL;
        if (nz) return p + (__builtin_ctzll(nz) >> 3);
        p += 8;
    }
#else
    (void)end;
#endif
    while (is_digit(*p)) p++;
    return p;
}

/* m * 10^n + the n digits at p (the caller keeps the total at most 19 digits, or
   counts the wrap-around itself). */
static inline __attribute__((always_inline)) uint64_t add_digits(uint64_t m, const char *p,
                                                                 Py_ssize_t n,
                                                                 const char *end) {
#ifdef HAVE_SWAR
    for (; n >= 8; n -= 8, p += 8) m = m * 100000000ULL + parse8(load8(p));
    if (n > 3 && end - p >= 8) {
        /* the n digits as the last n of 8, after (8 - n) '0's */
        uint64_t t = (load8(p) << (8 * (8 - n))) | (0x3030303030303030ULL >> (8 * n));
        return m * POW10U[n] + parse8(t);
    }
#else
    (void)end;
#endif
    for (; n > 0; n--) m = m * 10 + (uint64_t)(*p++ - '0');
    return m;
}

static inline __attribute__((always_inline)) const char *read_digits(const char *p,
                                                                     const char *end,
                                                                     uint64_t *m) {
    const char *q = skip_digits(p, end);
    *m = add_digits(*m, p, q - p, end);
    return q;
}

static inline int scratch_grow(Scratch *s) {
    Py_ssize_t cap = s->cap ? s->cap * 2 : 512;
    Slot *v = PyMem_Realloc(s->v, cap * sizeof(Slot));
    if (!v) {
        PyErr_NoMemory();
        return -1;
    }
    s->v = v;
    s->cap = cap;
    return 0;
}

/* The nearest double to the decimal text [start, stop), correctly rounded; 0 on failure. */
static int slow_double(const char *start, const char *stop, double *out) {
    char buf[80];
    Py_ssize_t n = stop - start;
    if (n >= (Py_ssize_t)sizeof(buf)) return 0;
    memcpy(buf, start, n);
    buf[n] = '\0';
    char *endp = NULL;
    double d = PyOS_string_to_double(buf, &endp, NULL);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (endp != buf + n || !isfinite(d)) return 0;
    *out = d;
    return 1;
}

/* The nearest double to m * 10^e10 (m > 0, exact); 0 when not decidable here. */
static inline int fast_double(uint64_t m, long e10, double *out) {
    if (m <= (1ULL << 53) && e10 >= -22 && e10 <= 22) {
        /* Both operands exact: one IEEE operation rounds correctly. */
        double x = (double)m;
        *out = e10 < 0 ? x / P10[-e10] : x * P10[e10];
        return 1;
    }
#ifdef HAVE_X87
    if (e10 >= -27 && e10 <= 27) {
        /* m and 10^|e10| are exact in 64 bits; the one operation rounds to 64 bits.
           Rounding that to 53 bits equals rounding the exact value unless the 11 bits
           below the double lie next to the halfway point (0x400). */
        long double x = (long double)m;
        x = e10 < 0 ? x / LP10[-e10] : x * LP10[e10];
        uint64_t mant;
        memcpy(&mant, &x, sizeof(mant));
        unsigned low = (unsigned)(mant & 0x7FF);
        if (low < 0x3FF || low > 0x401) {
            double r = (double)x;
            if (isfinite(r) && r >= DBL_MIN) {
                *out = r;
                return 1;
            }
        }
    }
#endif
    return 0;
}

typedef struct {
    int is_int;
    int big;       /* an integer outside int64 */
    int64_t i;
    double d;      /* set for floats only */
} Num;

/* One JSON number at c->p (strict grammar). 1 ok, 0 not a number / not readable here. */
static inline __attribute__((always_inline)) int parse_number(Cursor *c, Num *out) {
    const char *p = c->p, *end = c->end, *start = p;
    int neg = (*p == '-');
    p += neg;
    uint64_t m = 0;
    const char *ip = p;
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        p = read_digits(p, end, &m);
    } else {
        return 0;
    }
    Py_ssize_t nint = p - ip; /* "0" counts as one digit here */
    if (*p != '.' && (*p | 0x20) != 'e') {
        c->p = p;
        out->is_int = 1;
        out->big = nint > 19 || (neg ? m > (uint64_t)INT64_MAX + 1 : m > (uint64_t)INT64_MAX);
        out->i = neg ? (int64_t)(0 - m) : (int64_t)m;
        return 1;
    }
    /* significant digits so far: none if the integer part is "0" (m may have wrapped
       past 19 digits, so look at the text, not at m) */
    Py_ssize_t nsig = (nint == 1 && *ip == '0') ? 0 : nint;
    long e10 = 0;
    if (*p == '.') {
        const char *fp = ++p;
        if (!is_digit(*p)) return 0;
        if (nsig == 0)
            while (*p == '0') p++; /* 0.000x: leading zeros are not significant */
        const char *sig = p;
        p = read_digits(p, end, &m);
        nsig += p - sig;
        e10 = -(long)(p - fp);
    }
    if ((*p | 0x20) == 'e') {
        p++;
        int eneg = (*p == '-');
        if (*p == '+' || *p == '-') p++;
        if (!is_digit(*p)) return 0;
        long ex = 0;
        while (is_digit(*p)) {
            if (ex < 100000) ex = ex * 10 + (*p - '0');
            p++;
        }
        e10 += eneg ? -ex : ex;
    }
    c->p = p;
    out->is_int = 0;
    out->big = 0;
    out->i = 0;
    if (m == 0 && nsig == 0) {
        out->d = neg ? -0.0 : 0.0;
        return 1;
    }
    double r;
    if (nsig <= 19 && fast_double(m, e10, &r)) {
        out->d = neg ? -r : r;
        return 1;
    }
    return slow_double(start, p, &out->d);
}

/* A char that continues a number token. */
static inline int in_number(char ch) {
    return is_digit(ch) || ch == '.' || ch == 'e' || ch == 'E' || ch == '+' || ch == '-';
}

/* The number token at p is exactly the ``len`` (<= 32) bytes at ``first``. */
static inline int repeats(const char *p, const char *end, const char *first, Py_ssize_t len) {
    if (end - p <= len || in_number(p[len])) return 0;
#ifdef HAVE_SWAR
    Py_ssize_t j = 0;
    for (; j + 8 <= len; j += 8)
        if (load8(p + j) != load8(first + j)) return 0;
    for (; j < len; j++)
        if (p[j] != first[j]) return 0;
    return 1;
#else
    return memcmp(p, first, len) == 0;
#endif
}

/*
 * An array of scalars, or of equal-length rows of scalars, at c->p == '['.
 * ``kind`` decides how ints, floats and bools may mix (see build_array); the
 * wrappers below give it as a constant so each kind gets its own loop.
 * Returns 1 with *n rows, *k per row (0: 1-D) and *mode, 0 if not decodable here,
 * -1 on MemoryError.
 */
static inline __attribute__((always_inline)) int
parse_array_as(Cursor *c, Scratch *s, const int kind, Py_ssize_t *n, Py_ssize_t *k,
               int *mode_out) {
    int mode = kind == KIND_FLOAT ? M_FLOAT : M_NONE;
    int inexact = 0; /* an int beyond 2^53 stored while in M_INT */
    Py_ssize_t rows = 0, width = -1, row_start = 0;
    /* Locals, not c->p / s->...: extensions build with -fno-strict-aliasing, so every
       store into a slot would otherwise force them back to memory. */
    const char *p = c->p + 1; /* past '[' */
    const char *const end = c->end;
    Slot *v = s->v;
    Py_ssize_t len = 0, cap = s->cap;
    while (is_ws(*p)) p++;
    int nested = (*p == '[');
    if (nested) {
        p++;
        while (is_ws(*p)) p++;
    }
    if (*p == ']') return 0; /* empty array or row: the reference decides */
    /* The first number's text while every number so far repeats it (ids, flags and
       rewards often do): a repeat is then compared, not parsed again. */
    const char *first = NULL;
    Py_ssize_t first_len = 0;
    for (;;) {
        if (len == cap) {
            if (scratch_grow(s) < 0) return -1;
            v = s->v;
            cap = s->cap;
        }
        char ch = *p;
        if (ch == 't' || ch == 'f') {
            int b = (ch == 't');
            if (b ? !(p[1] == 'r' && p[2] == 'u' && p[3] == 'e')
                  : !(p[1] == 'a' && p[2] == 'l' && p[3] == 's' && p[4] == 'e'))
                return 0;
            if (mode == M_NONE) mode = M_BOOL;
            else if (mode != M_BOOL) return 0;
            v[len].i = b;
            p += 5 - b;
        } else if (first && repeats(p, end, first, first_len)) {
            v[len] = v[len - 1]; /* the same text, so the same value and mode */
            p += first_len;
        } else {
            Num num;
            Cursor cc = {p, end};
            if (!parse_number(&cc, &num) || num.big || mode == M_BOOL) return 0;
            if (len == 0 && cc.p - p <= 32) {
                first = p;
                first_len = cc.p - p;
            } else {
                first = NULL; /* a different number: parse the rest */
            }
            p = cc.p;
            if (num.is_int) {
                int exact = num.i <= (1LL << 53) && num.i >= -(1LL << 53);
                if (mode == M_FLOAT) {
                    if (!exact) return 0;
                    v[len].d = (double)num.i;
                } else {
                    mode = M_INT;
                    inexact |= !exact;
                    v[len].i = num.i;
                }
            } else {
                if (kind == KIND_ID || kind == KIND_BOOL) return 0;
                if (mode == M_INT) {
                    /* ints so far, now a float: np.asarray makes them all float64 */
                    if (inexact) return 0;
                    for (Py_ssize_t j = 0; j < len; j++) v[j].d = (double)v[j].i;
                }
                mode = M_FLOAT;
                v[len].d = num.d;
            }
        }
        len++;
        int more = next_element(&p);
        if (more < 0) return 0;
        if (more) continue;
        p++;
        if (!nested) break;
        /* end of a row */
        rows++;
        if (width < 0) width = len - row_start;
        else if (len - row_start != width) return 0; /* ragged */
        row_start = len;
        while (is_ws(*p)) p++;
        if (*p == ']') {
            p++;
            break;
        }
        if (*p != ',') return 0;
        p++;
        while (is_ws(*p)) p++;
        if (*p != '[') return 0;
        p++;
        while (is_ws(*p)) p++;
        if (*p == ']') return 0; /* empty row */
    }
    c->p = p;
    s->len = len;
    *n = nested ? rows : len;
    *k = nested ? width : 0;
    *mode_out = mode;
    return 1;
}

static int parse_array(Cursor *c, Scratch *s, int kind, Py_ssize_t *n, Py_ssize_t *k,
                       int *mode) {
    switch (kind) {
    case KIND_FLOAT:
    case KIND_OBS: return parse_array_as(c, s, KIND_FLOAT, n, k, mode);
    case KIND_ID: return parse_array_as(c, s, KIND_ID, n, k, mode);
    case KIND_BOOL: return parse_array_as(c, s, KIND_BOOL, n, k, mode);
    case KIND_ACTION: return parse_array_as(c, s, KIND_ACTION, n, k, mode);
    default: return parse_array_as(c, s, KIND_GENERIC, n, k, mode);
    }
}

/* [{}, {}, ...] at c->p == '[': the number of empty objects, or 0 if not that. */
static Py_ssize_t parse_empty_objects(Cursor *c) {
    Py_ssize_t count = 0;
    c->p++;
    skip_ws(c);
    for (;;) {
        if (c->p >= c->end || *c->p != '{') return 0;
        c->p++;
        skip_ws(c);
        if (c->p >= c->end || *c->p != '}') return 0;
        c->p++;
        count++;
        skip_ws(c);
        if (c->p >= c->end) return 0;
        if (*c->p == ',') { c->p++; skip_ws(c); continue; }
        if (*c->p == ']') { c->p++; return count; }
        return 0;
    }
}

/*
 * The parsed scalars as the column's array (NULL with no error set: not decodable
 * here). Mirrors offrl.io.decode's converters for what parse_array admits:
 * KIND_FLOAT float32; KIND_ID int64 (ints only); KIND_BOOL bool (bools, or ints 0/1);
 * KIND_ACTION int64 for ints, else float32; KIND_GENERIC int64, float32 or bool.
 */
static PyObject *build_array(const Scratch *s, Py_ssize_t n, Py_ssize_t k, int kind, int mode) {
    npy_intp dims[2] = {n, k};
    int nd = k ? 2 : 1;
    int as;
    if (mode == M_FLOAT) {
        as = NPY_FLOAT32;
    } else if (mode == M_INT) {
        as = kind == KIND_BOOL ? NPY_BOOL : NPY_INT64;
        if (kind == KIND_BOOL)
            for (Py_ssize_t j = 0; j < s->len; j++)
                if ((uint64_t)s->v[j].i > 1) return NULL; /* 2, -1, ...: reference decides */
    } else if (mode == M_BOOL && (kind == KIND_BOOL || kind == KIND_GENERIC)) {
        as = NPY_BOOL;
    } else {
        return NULL;
    }
    if (as == NPY_BOOL && k) return NULL; /* 2-D flags: reference decides */
    PyObject *arr = PyArray_SimpleNew(nd, dims, as);
    if (!arr) return NULL;
    void *data = PyArray_DATA((PyArrayObject *)arr);
    if (as == NPY_FLOAT32) {
        float *out = (float *)data;
        int overflow = 0;
        for (Py_ssize_t j = 0; j < s->len; j++) {
            float f = (float)s->v[j].d;
            overflow |= isinf(f);
            out[j] = f;
        }
        if (overflow) { /* beyond float32: the reference decides (and warns) */
            Py_DECREF(arr);
            return NULL;
        }
    } else if (as == NPY_INT64) {
        memcpy(data, s->v, s->len * sizeof(int64_t));
    } else {
        npy_bool *out = (npy_bool *)data;
        for (Py_ssize_t j = 0; j < s->len; j++) out[j] = s->v[j].i != 0;
    }
    return arr;
}

static PyObject *empty_dicts(Py_ssize_t n) {
    npy_intp dims[1] = {n};
    PyObject *arr = PyArray_SimpleNew(1, dims, NPY_OBJECT);
    if (!arr) return NULL;
    PyObject **data = (PyObject **)PyArray_DATA((PyArrayObject *)arr);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *dct = PyDict_New();
        if (!dct) {
            Py_DECREF(arr);
            return NULL;
        }
        Py_XSETREF(data[j], dct);
    }
    return arr;
}

/* A string at c->p == '"' up to the next '"': [*s, *s + *len). Not validated. */
static int scan_string(Cursor *c, const char **s, Py_ssize_t *len) {
    const char *q = memchr(c->p + 1, '"', c->end - c->p - 1);
    if (!q) return 0;
    *s = c->p + 1;
    *len = q - *s;
    c->p = q + 1;
    return 1;
}

/* Printable ASCII without escapes (so the text is exactly the JSON string's value). */
static int plain_ascii(const char *s, Py_ssize_t len) {
    for (Py_ssize_t j = 0; j < len; j++) {
        unsigned char ch = (unsigned char)s[j];
        if (ch < 0x20 || ch > 0x7E || ch == '\\') return 0;
    }
    return 1;
}

static int parse_plain_string(Cursor *c, const char **s, Py_ssize_t *len) {
    return scan_string(c, s, len) && plain_ascii(*s, *len);
}

/* The size of canonical base64 text once decoded; -1 if its length cannot be that. */
static Py_ssize_t b64_size(const char *s, Py_ssize_t len) {
    if (len < 4 || len % 4) return -1;
    Py_ssize_t pad = (s[len - 1] == '=') + (s[len - 1] == '=' && s[len - 2] == '=');
    return len / 4 * 3 - pad;
}

#ifdef HAVE_B64_SSSE3
/* (c - lo) <= span for each unsigned byte c: 0xFF where it holds. */
__attribute__((target("ssse3"))) static inline __m128i in_range(__m128i c, char lo, char span) {
    __m128i x = _mm_sub_epi8(c, _mm_set1_epi8(lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(span)), x);
}

/*
 * The first 16-character blocks of ``quartets`` full quartets at u into o, 16
 * characters (12 bytes) at a time, stopping 6 quartets before the end so that the
 * 16-byte stores stay inside the output. Returns the quartets done, -1 at a character
 * outside the alphabet (the scalar loop's verdict too).
 */
__attribute__((target("ssse3"))) static Py_ssize_t b64_blocks(const unsigned char *u,
                                                              Py_ssize_t quartets,
                                                              unsigned char *o) {
    const __m128i merge_pairs = _mm_set1_epi32(0x01400140); /* a * 64 + b per byte pair */
    const __m128i merge_words = _mm_set1_epi32(0x00011000); /* ab * 4096 + cd per pair */
    const __m128i order = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    Py_ssize_t q = 0;
    for (; q + 6 <= quartets; q += 4, u += 16, o += 12) {
        __m128i c = _mm_loadu_si128((const __m128i *)u);
        __m128i upper = in_range(c, 'A', 25), lower = in_range(c, 'a', 25);
        __m128i digit = in_range(c, '0', 9);
        __m128i plus = _mm_cmpeq_epi8(c, _mm_set1_epi8('+'));
        __m128i slash = _mm_cmpeq_epi8(c, _mm_set1_epi8('/'));
        __m128i valid = _mm_or_si128(_mm_or_si128(upper, lower),
                                     _mm_or_si128(digit, _mm_or_si128(plus, slash)));
        if (_mm_movemask_epi8(valid) != 0xFFFF) return -1;
        /* the 6-bit value: A-Z -65, a-z -71, 0-9 +4, '+' +19 (62), '/' +16 (63) */
        __m128i shift = _mm_or_si128(
            _mm_or_si128(_mm_and_si128(upper, _mm_set1_epi8(-65)),
                         _mm_and_si128(lower, _mm_set1_epi8(-71))),
            _mm_or_si128(_mm_and_si128(digit, _mm_set1_epi8(4)),
                         _mm_or_si128(_mm_and_si128(plus, _mm_set1_epi8(19)),
                                      _mm_and_si128(slash, _mm_set1_epi8(16)))));
        __m128i v = _mm_add_epi8(c, shift);
        __m128i w = _mm_madd_epi16(_mm_maddubs_epi16(v, merge_pairs), merge_words);
        _mm_storeu_si128((__m128i *)o, _mm_shuffle_epi8(w, order));
    }
    return q;
}
#endif

/* Canonical base64 (what b64decode(validate=True) also accepts) into o[0, b64_size);
   0 if the text is not that. ``simd``: 16 characters at a time where the CPU can. */
static int b64_decode(const char *s, Py_ssize_t len, unsigned char *o, int simd) {
    Py_ssize_t pad = len / 4 * 3 - b64_size(s, len);
    const unsigned char *u = (const unsigned char *)s;
    Py_ssize_t full = (len - (pad ? 4 : 0)) / 4;
    uint32_t bad = 0;
    Py_ssize_t q = 0;
#ifdef HAVE_B64_SSSE3
    if (simd && cpu_ssse3) {
        q = b64_blocks(u, full, o);
        if (q < 0) return 0;
        u += 4 * q;
        o += 3 * q;
    }
#else
    (void)simd;
#endif
    for (; q < full; q++, u += 4, o += 3) {
        uint32_t v = B64Q[0][u[0]] | B64Q[1][u[1]] | B64Q[2][u[2]] | B64Q[3][u[3]];
        bad |= v;
        o[0] = (unsigned char)(v >> 16);
        o[1] = (unsigned char)(v >> 8);
        o[2] = (unsigned char)v;
    }
    if (pad) {
        uint32_t v = B64Q[0][u[0]] | B64Q[1][u[1]] | (pad == 1 ? B64Q[2][u[2]] : 0);
        bad |= v;
        o[0] = (unsigned char)(v >> 16);
        if (pad == 1) o[1] = (unsigned char)(v >> 8);
    }
    return !(bad >> 24); /* else a byte outside the alphabet ('=', '\\', non-ASCII, ...) */
}

/* Canonical base64 -> bytes (``simd``: see b64_decode); NULL with no error set: not that. */
static PyObject *b64_bytes(const char *s, Py_ssize_t len, int simd) {
    Py_ssize_t size = b64_size(s, len);
    if (size < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (!out) return NULL;
    if (!b64_decode(s, len, (unsigned char *)PyBytes_AS_STRING(out), simd)) Py_CLEAR(out);
    return out;
}

typedef struct {
    PyObject *kinds;     /* dict name -> kind */
    PyObject *templates; /* dict payload length -> templates (see match), or NULL */
    Scratch scratch;
    unsigned char *raw;  /* a compressed column's LZ4 frame (base64-decoded) */
    Py_ssize_t raw_cap;
    const char *type;    /* value of "type", if a plain string */
    Py_ssize_t type_len;
    int other_values;    /* a value that is not a column (number, bool, other string) */
    int default_kind;    /* the kind of a column not in kinds: generic, or skip */
    int nkeys;           /* keys read so far in the line (slots of the name cache) */
    int frames;          /* compressed columns left to the caller as their LZ4 frame */
} Ctx;

/* The column names of the last lines, by their position in the line: files repeat the
   same keys in the same order, so a name is made (and hashed) once, not once a line. */
#define NAME_SLOTS 64
static PyObject *NAME_CACHE[NAME_SLOTS];

/* The key [key, key + len) (plain ASCII) as a str: a new reference, NULL on error. */
static PyObject *key_name(Ctx *x, const char *key, Py_ssize_t len) {
    int slot = x->nkeys++;
    PyObject *name = slot < NAME_SLOTS ? NAME_CACHE[slot] : NULL;
    if (name && PyUnicode_GET_LENGTH(name) == len &&
        memcmp(PyUnicode_1BYTE_DATA(name), key, len) == 0) {
        Py_INCREF(name);
        return name;
    }
    name = PyUnicode_DecodeASCII(key, len, NULL);
    if (name && slot < NAME_SLOTS) {
        Py_INCREF(name);
        Py_XSETREF(NAME_CACHE[slot], name);
    }
    return name;
}

/* Past a JSON number at p (strict grammar), not converted; NULL if not a number. */
static inline __attribute__((always_inline)) const char *skip_num(const char *p,
                                                                  const char *end) {
    if (*p == '-') p++;
    if (*p == '0') p++;
    else if (is_digit(*p)) p = skip_digits(p + 1, end);
    else return NULL;
    if (*p == '.') {
        p++;
        if (!is_digit(*p)) return NULL;
        p = skip_digits(p + 1, end);
    }
    if ((*p | 0x20) == 'e') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!is_digit(*p)) return NULL;
        p = skip_digits(p + 1, end);
    }
    return p;
}

static int skip_value(Cursor *c, int depth);

/* An array at c->p == '[' of any values, not converted (numbers without a call). */
static int skip_array(Cursor *c, int depth) {
    const char *p = c->p + 1, *const end = c->end;
    while (is_ws(*p)) p++;
    if (*p == ']') {
        c->p = p + 1;
        return 1;
    }
    for (;;) {
        char ch = *p;
        if (ch == '-' || is_digit(ch)) {
            p = skip_num(p, end);
            if (!p) return 0;
        } else {
            c->p = p;
            if (!skip_value(c, depth + 1)) return 0;
            p = c->p;
        }
        int more = next_element(&p);
        if (more < 0) return 0;
        if (more) continue;
        c->p = p + 1;
        return 1;
    }
}

/* Any JSON value this parser can prove valid (strings: printable ASCII, no escapes;
   at most 32 levels), not converted. 1 ok, 0 not provable here. */
static int skip_value(Cursor *c, int depth) {
    char ch = *c->p;
    const char *s;
    Py_ssize_t len;
    if (depth >= 32 && (ch == '[' || ch == '{')) return 0;
    if (ch == '[') return skip_array(c, depth);
    if (ch == '{') {
        c->p++;
        skip_ws(c);
        if (*c->p == '}') {
            c->p++;
            return 1;
        }
        for (;;) {
            if (*c->p != '"' || !parse_plain_string(c, &s, &len)) return 0;
            skip_ws(c);
            if (*c->p != ':') return 0;
            c->p++;
            skip_ws(c);
            if (!skip_value(c, depth + 1)) return 0;
            skip_ws(c);
            if (*c->p == ',') {
                c->p++;
                skip_ws(c);
                continue;
            }
            if (*c->p != '}') return 0;
            c->p++;
            return 1;
        }
    }
    if (ch == '"') return parse_plain_string(c, &s, &len);
    const char *q = c->p;
    if (ch == 't' && q[1] == 'r' && q[2] == 'u' && q[3] == 'e') {
        c->p += 4;
        return 1;
    }
    if (ch == 'f' && q[1] == 'a' && q[2] == 'l' && q[3] == 's' && q[4] == 'e') {
        c->p += 5;
        return 1;
    }
    if (ch == 'n' && q[1] == 'u' && q[2] == 'l' && q[3] == 'l') {
        c->p += 4;
        return 1;
    }
    q = skip_num(q, c->end);
    if (!q) return 0;
    c->p = q;
    return 1;
}

/*
 * The first template (head, tail, dtype, shape, count) of the list ``templates`` whose
 * head and tail bytes equal those of data[0, len), as a new array holding a copy of the
 * bytes between them; Py_None (a new reference) when none matches; NULL on error. See
 * offrl.io.templates: a template is only ever learned where those bytes are the
 * array's memory, copied and never interpreted.
 */
static PyObject *match_list(const char *data, Py_ssize_t len, PyObject *templates) {
    if (!PyList_Check(templates)) goto bad;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(templates); j++) {
        PyObject *t = PyList_GET_ITEM(templates, j);
        PyObject *head, *tail, *shape, *count;
        PyArray_Descr *dtype;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) goto bad;
        head = PyTuple_GET_ITEM(t, 0);
        tail = PyTuple_GET_ITEM(t, 1);
        dtype = (PyArray_Descr *)PyTuple_GET_ITEM(t, 2);
        shape = PyTuple_GET_ITEM(t, 3);
        count = PyTuple_GET_ITEM(t, 4);
        if (!PyBytes_Check(head) || !PyBytes_Check(tail) || !PyArray_DescrCheck(dtype) ||
            !PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) > NPY_MAXDIMS || !PyLong_Check(count))
            goto bad;
        if (PyDataType_REFCHK(dtype)) goto bad; /* bytes are never Python objects */
        Py_ssize_t hl = PyBytes_GET_SIZE(head), tl = PyBytes_GET_SIZE(tail);
        Py_ssize_t items = PyLong_AsSsize_t(count);
        if (items < 0) goto bad;
        Py_ssize_t nbytes = items * (Py_ssize_t)PyDataType_ELSIZE(dtype);
        if (hl + tl + nbytes != len) continue;
        if (memcmp(data, PyBytes_AS_STRING(head), hl) != 0 ||
            memcmp(data + len - tl, PyBytes_AS_STRING(tail), tl) != 0)
            continue;
        npy_intp dims[NPY_MAXDIMS];
        int nd = (int)PyTuple_GET_SIZE(shape);
        npy_intp total = 1;
        for (int d = 0; d < nd; d++) {
            dims[d] = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, d));
            if (dims[d] < 0) goto bad;
            total *= dims[d];
        }
        if (total != items) goto bad;
        Py_INCREF(dtype); /* PyArray_NewFromDescr steals it */
        PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, dtype, nd, dims, NULL, NULL, 0, NULL);
        if (arr) memcpy(PyArray_DATA((PyArrayObject *)arr), data + hl, nbytes);
        return arr;
    }
    Py_RETURN_NONE;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "match: templates must be a list of (bytes, bytes, "
                                         "dtype, shape, count) tuples of a consistent size");
    return NULL;
}

/* The learned templates for payloads of len bytes (x->templates[len]): a borrowed list
   reference, NULL with no error when there are none, NULL with an error set on error. */
static PyObject *templates_for(Ctx *x, Py_ssize_t len) {
    PyObject *key = PyLong_FromSsize_t(len);
    if (!key) return NULL;
    PyObject *found = PyDict_GetItemWithError(x->templates, key);
    Py_DECREF(key);
    return found;
}

/* A float32 array of one or more dimensions in native byte order: what
   offrl.io.native keeps as it is for an observation column. */
static int is_obs_array(PyObject *arr) {
    PyArrayObject *a = (PyArrayObject *)arr;
    return PyArray_NDIM(a) >= 1 && PyArray_TYPE(a) == NPY_FLOAT32 &&
           PyArray_ISNBO(PyArray_DESCR(a)->byteorder);
}

/*
 * A compressed observation column decoded here: base64, its LZ4 frame (_lz4frame.h),
 * then a learned payload template, into a float32 array of one or more dimensions.
 * 1 stored in ``out``, 0 not decodable here (the caller hands the frame to Python,
 * which also learns new templates), -1 error.
 */
static int frame_column(Ctx *x, PyObject *out, PyObject *name, const char *s, Py_ssize_t len) {
    Py_ssize_t size = b64_size(s, len);
    if (size < 0) return 0;
    if (size > x->raw_cap) {
        unsigned char *raw = PyMem_Realloc(x->raw, size);
        if (!raw) {
            PyErr_NoMemory();
            return -1;
        }
        x->raw = raw;
        x->raw_cap = size;
    }
    if (!b64_decode(s, len, x->raw, 1)) return 0;
    uint8_t *payload;
    size_t plen;
    int r = lz4frame_decode(x->raw, (size_t)size, &payload, &plen);
    if (r < 0) PyErr_NoMemory();
    if (r <= 0) return r;
    PyObject *found = templates_for(x, (Py_ssize_t)plen);
    PyObject *arr = found ? match_list((const char *)payload, (Py_ssize_t)plen, found) : NULL;
    PyMem_Free(payload);
    if (!arr) return PyErr_Occurred() ? -1 : 0;
    if (arr == Py_None || !is_obs_array(arr)) {
        Py_DECREF(arr);
        return 0;
    }
    r = PyDict_SetItem(out, name, arr);
    Py_DECREF(arr);
    return r < 0 ? -1 : 1;
}

static int kind_of(Ctx *x, PyObject *name) {
    PyObject *v = PyDict_GetItemWithError(x->kinds, name);
    if (!v) return PyErr_Occurred() ? -1 : x->default_kind;
    long kind = PyLong_AsLong(v);
    if (kind == -1 && PyErr_Occurred()) return -1;
    return (int)kind;
}

static int parse_object(Cursor *c, Ctx *x, PyObject *out, PyObject **nested, int top);

/* A key's value, stored in ``out`` under ``name`` when it is a column. 1 ok, 0 no, -1 error. */
static int parse_member(Cursor *c, Ctx *x, PyObject *out, PyObject *name, const char *key,
                        Py_ssize_t keylen, PyObject **nested, int top) {
    char ch = *c->p;
    if (keylen == 8 && memcmp(key, "seq_lens", 8) == 0) return 0;
    /* Inside policy_batches every key is a column: the reference drops "type" there
       and rejects values that are not columns; let it. */
    if (!top && keylen == 4 && memcmp(key, "type", 4) == 0) return 0;
    if (ch == '[') {
        int kind = kind_of(x, name);
        if (kind < 0) return -1;
        if (kind == KIND_SKIP) return skip_value(c, 0);
        PyObject *arr;
        if (kind == KIND_INFOS) {
            Py_ssize_t n = parse_empty_objects(c);
            if (n == 0) return 0;
            arr = empty_dicts(n);
            if (!arr) return -1;
        } else {
            Py_ssize_t n, k;
            int mode;
            if (kind == KIND_OBS) kind = KIND_FLOAT;
            int r = parse_array(c, &x->scratch, kind, &n, &k, &mode);
            if (r <= 0) return r;
            arr = build_array(&x->scratch, n, k, kind, mode);
            if (!arr) return PyErr_Occurred() ? -1 : 0;
        }
        int r = PyDict_SetItem(out, name, arr);
        Py_DECREF(arr);
        return r < 0 ? -1 : 1;
    }
    if (ch == '"') {
        const char *s;
        Py_ssize_t len;
        if (!scan_string(c, &s, &len)) return 0;
        int compressed = len >= 5 && memcmp(s, "BCJNG", 5) == 0;
        if (!compressed && !plain_ascii(s, len)) return 0;
        if (keylen == 4 && memcmp(key, "type", 4) == 0) {
            if (!top) return 0;
            x->type = s;
            x->type_len = len;
            return 1;
        }
        if (!compressed) {
            if (!top) return 0;
            x->other_values = 1;
            return 1;
        }
        int kind = kind_of(x, name);
        if (kind < 0) return -1;
        if (kind == KIND_SKIP) return 1;
        if (x->templates && kind == KIND_OBS) {
            int r = frame_column(x, out, name, s, len);
            if (r != 0) return r;
        }
        PyObject *frame = b64_bytes(s, len, 1);
        if (!frame) return PyErr_Occurred() ? -1 : 0;
        int r = PyDict_SetItem(out, name, frame);
        Py_DECREF(frame);
        x->frames++;
        return r < 0 ? -1 : 1;
    }
    if (ch == 'n') {
        if (strncmp(c->p, "null", 4) != 0) return 0;
        c->p += 4;
        return 1; /* null: not a column */
    }
    if (ch == '{') {
        if (!top || keylen != 14 || memcmp(key, "policy_batches", 14) != 0 || *nested) return 0;
        /* {"default_policy": {columns}} */
        c->p++;
        skip_ws(c);
        const char *k2;
        Py_ssize_t k2len;
        if (c->p >= c->end || *c->p != '"' || !parse_plain_string(c, &k2, &k2len)) return 0;
        if (k2len != 14 || memcmp(k2, "default_policy", 14) != 0) return 0;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return 0;
        c->p++;
        skip_ws(c);
        if (c->p >= c->end || *c->p != '{') return 0;
        PyObject *cols = PyDict_New();
        if (!cols) return -1;
        PyObject *unused = NULL;
        int r = parse_object(c, x, cols, &unused, 0);
        if (r <= 0) { Py_DECREF(cols); return r; }
        skip_ws(c);
        if (c->p >= c->end || *c->p != '}') { Py_DECREF(cols); return 0; }
        c->p++;
        *nested = cols;
        return 1;
    }
    /* A number or boolean: not a column (an error for a SampleBatch, ignored beside a
       MultiAgentBatch's policy_batches). */
    if (ch == 't' || ch == 'f') {
        Py_ssize_t w = ch == 't' ? 4 : 5;
        if (strncmp(c->p, ch == 't' ? "true" : "false", w) != 0) return 0;
        c->p += w;
    } else {
        Num num;
        if (!parse_number(c, &num)) return 0;
    }
    if (!top) return 0;
    x->other_values = 1;
    return 1;
}

/* An object of columns at c->p == '{'. 1 ok, 0 not decodable here, -1 error. */
static int parse_object(Cursor *c, Ctx *x, PyObject *out, PyObject **nested, int top) {
    const char *keys[64];
    Py_ssize_t lens[64];
    int nkeys = 0;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') { c->p++; return 1; }
    for (;;) {
        const char *key;
        Py_ssize_t keylen;
        if (c->p >= c->end || *c->p != '"' || !parse_plain_string(c, &key, &keylen)) return 0;
        for (int j = 0; j < nkeys; j++)  /* duplicate keys: the reference keeps the last */
            if (lens[j] == keylen && memcmp(keys[j], key, keylen) == 0) return 0;
        if (nkeys == 64) return 0;
        keys[nkeys] = key;
        lens[nkeys++] = keylen;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return 0;
        c->p++;
        skip_ws(c);
        if (c->p >= c->end) return 0;
        PyObject *name = key_name(x, key, keylen);
        if (!name) return -1;
        int r = parse_member(c, x, out, name, key, keylen, nested, top);
        Py_DECREF(name);
        if (r < 0) return -1;
        if (r == 0) return 0;
        skip_ws(c);
        if (c->p >= c->end) return 0;
        if (*c->p == ',') { c->p++; skip_ws(c); continue; }
        if (*c->p == '}') { c->p++; return 1; }
        return 0;
    }
}

/* Interned column names the record checks look up (made once, at module init). */
enum { N_OBS, N_NEW_OBS, N_ACTIONS, N_REWARDS, N_DONES, N_TERMINATEDS, N_TRUNCATEDS, N_NAMES };
static const char *const NAME_TEXT[N_NAMES] = {"obs",     "new_obs", "actions",    "rewards",
                                               "dones",   "terminateds", "truncateds"};
static PyObject *NAMES[N_NAMES];

/* cols[NAMES[id]], borrowed; NULL when absent (the dicts hold str keys and arrays:
   a lookup cannot fail). */
static inline PyObject *column(PyObject *cols, int id) { return PyDict_GetItem(cols, NAMES[id]); }

/* dones = terminateds | truncateds, appended last as offrl.io.decode's normalisation
   does, when the record has both flags (1-D, same length) and no dones. The caller
   (offrl.io.native) hands records with missing or unequal columns to the reference
   path, so this never changes an error message. 0 ok or not applicable, -1 error. */
static int add_dones(PyObject *cols) {
    PyObject *te = column(cols, N_TERMINATEDS);
    PyObject *tr = column(cols, N_TRUNCATEDS);
    if (!te || !tr || column(cols, N_DONES)) return 0;
    if (!PyArray_Check(te) || !PyArray_Check(tr)) return 0;
    PyArrayObject *a = (PyArrayObject *)te, *b = (PyArrayObject *)tr;
    if (PyArray_TYPE(a) != NPY_BOOL || PyArray_TYPE(b) != NPY_BOOL || PyArray_NDIM(a) != 1 ||
        PyArray_NDIM(b) != 1 || PyArray_DIM(a, 0) != PyArray_DIM(b, 0))
        return 0;
    npy_intp n = PyArray_DIM(a, 0);
    PyObject *d = PyArray_SimpleNew(1, &n, NPY_BOOL);
    if (!d) return -1;
    const npy_bool *x = PyArray_DATA(a), *y = PyArray_DATA(b);
    npy_bool *out = PyArray_DATA((PyArrayObject *)d);
    for (npy_intp j = 0; j < n; j++) out[j] = x[j] | y[j];
    int r = PyDict_SetItem(cols, NAMES[N_DONES], d);
    Py_DECREF(d);
    return r;
}

/* Every column an array (no LZ4 frame left), obs, actions and rewards among them, all
   of one length: the checks offrl.io.native would make next. */
static int columns_final(PyObject *cols) {
    if (!column(cols, N_OBS) || !column(cols, N_ACTIONS) || !column(cols, N_REWARDS)) return 0;
    Py_ssize_t pos = 0;
    PyObject *name, *value;
    npy_intp rows = -1;
    while (PyDict_Next(cols, &pos, &name, &value)) {
        if (!PyArray_Check(value) || PyArray_NDIM((PyArrayObject *)value) < 1) return 0;
        npy_intp n = PyArray_DIM((PyArrayObject *)value, 0);
        if (rows >= 0 && n != rows) return 0;
        rows = n;
    }
    return 1;
}

/* The body of decode and decode_columns: the columns dict, or NULL (*r: 0 not
   decodable here, -1 error). x->frames counts the columns left as LZ4 frames. */
static PyObject *decode_line(PyObject *line, Py_ssize_t start, Py_ssize_t stop, Ctx *x,
                             int *r) {
    Py_ssize_t size = PyBytes_GET_SIZE(line);
    if (stop < 0) stop = size;
    if (start < 0 || start > stop || stop > size) {
        PyErr_SetString(PyExc_ValueError, "decode: need 0 <= start <= stop <= len(line)");
        *r = -1;
        return NULL;
    }
    /* A bytes object's text ends with a NUL byte, which the parser relies on. The
       line may be a span [start, stop) of a larger buffer (a read of many lines):
       the bytes after stop are then more text, which a valid line never reaches (it
       must end exactly at stop) and every loop stops at the final NUL. */
    const char *text = PyBytes_AS_STRING(line);
    Cursor c = {text + start, text + stop};
    PyObject *top = PyDict_New(), *nested = NULL, *result = NULL;
    *r = -1;
    if (!top) goto done;
    skip_ws(&c);
    *r = 0;
    if (c.p >= c.end || *c.p != '{') goto done;
    *r = parse_object(&c, x, top, &nested, 1);
    if (*r <= 0) goto done;
    *r = 0;
    while (c.p < c.end && is_ws(*c.p)) c.p++;
    if (c.p != c.end || !x->type) goto done;
    if (x->type_len == 11 && memcmp(x->type, "SampleBatch", 11) == 0) {
        if (nested || x->other_values) goto done;
        result = top;
        Py_INCREF(result);
    } else if (x->type_len == 15 && memcmp(x->type, "MultiAgentBatch", 15) == 0 && nested) {
        result = nested;
        Py_INCREF(result);
    } else {
        goto done;
    }
    if (add_dones(result) < 0) {
        Py_CLEAR(result);
        *r = -1;
    }
done:
    PyMem_Free(x->scratch.v);
    PyMem_Free(x->raw);
    Py_XDECREF(top);
    Py_XDECREF(nested);
    return result;
}

static PyObject *decode(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *line, *kinds;
    int default_kind = KIND_GENERIC;
    Py_ssize_t start = 0, stop = -1;
    if (!PyArg_ParseTuple(args, "O!O!|inn:decode", &PyBytes_Type, &line, &PyDict_Type, &kinds,
                          &default_kind, &start, &stop))
        return NULL;
    Ctx x = {.kinds = kinds, .default_kind = default_kind};
    int r;
    PyObject *result = decode_line(line, start, stop, &x, &r);
    if (result || r < 0) return result;
    Py_RETURN_NONE;
}

/*
 * decode_columns(line, kinds, default_kind, start, stop, templates)
 *     -> (dict, state) | None
 *
 * decode(), also building compressed KIND_OBS columns here when ``templates`` (the
 * payload length -> template list dict of offrl.io.templates) has their layout.
 * ``state`` (see the top of this file): STATE_PENDING, LZ4 frames left for the
 * caller to finish and check; STATE_CHECKED, none left and the record passed
 * columns_final; STATE_COMPLETE, also nothing left to normalise (columns_complete).
 */
enum { STATE_PENDING = 0, STATE_CHECKED = 1, STATE_COMPLETE = 2 };

/* Nothing for offrl.io.decode.finish_checked to add: both flags, dones and new_obs. */
static int columns_complete(PyObject *cols) {
    return column(cols, N_DONES) && column(cols, N_TERMINATEDS) &&
           column(cols, N_TRUNCATEDS) && column(cols, N_NEW_OBS);
}

static PyObject *decode_columns(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *line, *kinds, *templates;
    int default_kind;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "O!O!innO!:decode_columns", &PyBytes_Type, &line, &PyDict_Type,
                          &kinds, &default_kind, &start, &stop, &PyDict_Type, &templates))
        return NULL;
    Ctx x = {.kinds = kinds, .templates = templates, .default_kind = default_kind};
    int r;
    PyObject *cols = decode_line(line, start, stop, &x, &r);
    if (!cols) {
        if (r < 0) return NULL;
        Py_RETURN_NONE;
    }
    int state = STATE_PENDING;
    if (x.frames == 0) {
        if (!columns_final(cols)) {
            Py_DECREF(cols);
            Py_RETURN_NONE; /* the reference path words what is wrong */
        }
        state = columns_complete(cols) ? STATE_COMPLETE : STATE_CHECKED;
    }
    return Py_BuildValue("(Ni)", cols, state);
}

/*
 * match(payload, templates) -> ndarray | None: match_list on a bytes-like payload.
 */
static PyObject *match(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer buf;
    PyObject *templates;
    if (!PyArg_ParseTuple(args, "y*O!:match", &buf, &PyList_Type, &templates)) return NULL;
    PyObject *result = match_list(buf.buf, buf.len, templates);
    PyBuffer_Release(&buf);
    return result;
}

/*
 * lz4_frame(data) -> bytearray | None: the content of one LZ4 frame, or None when
 * _lz4frame.h cannot prove lz4.frame.decompress gives the same (that then decides).
 */
static PyObject *lz4_frame(PyObject *Py_UNUSED(self), PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    uint8_t *out;
    size_t len;
    int r = lz4frame_decode(buf.buf, (size_t)buf.len, &out, &len);
    PyBuffer_Release(&buf);
    if (r < 0) return PyErr_NoMemory();
    if (r == 0) Py_RETURN_NONE;
    PyObject *result = PyByteArray_FromStringAndSize((const char *)out, (Py_ssize_t)len);
    PyMem_Free(out);
    return result;
}

/*
 * b64decode(text: bytes, simd: bool = True) -> bytes | None: the base64 decoding the
 * line decoder applies to compressed columns (None: not canonical base64). ``simd``
 * False takes the scalar loop only, so that tests can compare the two.
 */
static PyObject *b64decode(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *text;
    Py_ssize_t len;
    int simd = 1;
    if (!PyArg_ParseTuple(args, "y#|p:b64decode", &text, &len, &simd)) return NULL;
    PyObject *out = b64_bytes(text, len, simd);
    if (out || PyErr_Occurred()) return out;
    Py_RETURN_NONE;
}

/*
 * parse_double(text: bytes) -> float | None: the JSON number that starts ``text``, read
 * as the decoder reads a float, before the cast to float32 (None: an int, or not a
 * number it reads); lets tests compare every double with Python's.
 */
static PyObject *parse_double(PyObject *Py_UNUSED(self), PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_double: need bytes");
        return NULL;
    }
    const char *text = PyBytes_AS_STRING(arg);
    Cursor c = {text, text + PyBytes_GET_SIZE(arg)};
    Num num;
    if (!parse_number(&c, &num) || num.is_int) Py_RETURN_NONE;
    return PyFloat_FromDouble(num.d);
}

static PyMethodDef methods[] = {
    {"parse_double", parse_double, METH_O,
     "parse_double(text) -> float | None: one JSON number read as a double (for tests)."},
    {"b64decode", b64decode, METH_VARARGS,
     "b64decode(text, simd=True) -> bytes | None: the compressed columns' base64 decoding."},
    {"match", match, METH_VARARGS,
     "match(payload, templates) -> ndarray | None: a copy of the data of the first "
     "template whose head and tail match."},
    {"decode", decode, METH_VARARGS,
     "decode(line, kinds) -> dict | None: the columns of a common experience line."},
    {"decode_columns", decode_columns, METH_VARARGS,
     "decode_columns(line, kinds, default_kind, start, stop, templates) -> (dict, state) | "
     "None: decode(), compressed observation columns included where a template matches."},
    {"lz4_frame", lz4_frame, METH_O,
     "lz4_frame(data) -> bytearray | None: the content of one LZ4 frame, or None: not "
     "provably what lz4.frame.decompress gives."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linedec",
                                    "Compiled decoder for common experience lines.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__linedec(void) {
    import_array();
#ifdef HAVE_B64_SSSE3
    cpu_ssse3 = __builtin_cpu_supports("ssse3");
#endif
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < 256; j++) B64Q[q][j] = 1u << 24;
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int j = 0; j < 64; j++)
        for (int q = 0; q < 4; q++) B64Q[q][(unsigned char)alphabet[j]] = (uint32_t)j << (18 - 6 * q);
    for (int j = 0; j < N_NAMES; j++)
        if (!NAMES[j] && !(NAMES[j] = PyUnicode_InternFromString(NAME_TEXT[j]))) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "KIND_GENERIC", KIND_GENERIC) < 0 ||
        PyModule_AddIntConstant(m, "KIND_FLOAT", KIND_FLOAT) < 0 ||
        PyModule_AddIntConstant(m, "KIND_ID", KIND_ID) < 0 ||
        PyModule_AddIntConstant(m, "KIND_BOOL", KIND_BOOL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_ACTION", KIND_ACTION) < 0 ||
        PyModule_AddIntConstant(m, "KIND_INFOS", KIND_INFOS) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SKIP", KIND_SKIP) < 0 ||
        PyModule_AddIntConstant(m, "KIND_OBS", KIND_OBS) < 0 ||
        PyModule_AddIntConstant(m, "STATE_PENDING", STATE_PENDING) < 0 ||
        PyModule_AddIntConstant(m, "STATE_CHECKED", STATE_CHECKED) < 0 ||
        PyModule_AddIntConstant(m, "STATE_COMPLETE", STATE_COMPLETE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
