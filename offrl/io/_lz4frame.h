/*
 * LZ4 frames for offrl.io._linedec: a strict decoder of the frames compressed
 * columns use, so that their arrays are built without a round trip through Python.
 *
 * lz4frame_decode() accepts only a frame it can prove lz4.frame.decompress decodes to
 * the same bytes: exactly one frame (no trailing bytes, no skippable frame), version
 * 01, a stored content size, no dictionary id and no block checksums, a correct
 * header checksum (and content checksum when the frame has one), every block within
 * the frame's maximum block size, and every compressed block well formed by the LZ4
 * block format's own rules (the last sequence holds only literals, the last 5 bytes
 * of a block are literals, its last match starts at least 12 bytes before its end,
 * no match reaches before the data it may refer to). Those rules are stricter than
 * what liblz4 checks, so whatever is accepted here liblz4 accepts too, and decoding
 * is deterministic. Anything else returns 0 and the caller takes the Python path
 * (python-lz4), which decides and words the error.
 *
 * Memory: the output is allocated once, at the stored content size, and only when
 * that size is possible for the input's length (LZ4 expands at most ~255 times);
 * every read and write is bounds-checked.
 */
#ifndef OFFRL_LZ4FRAME_H
#define OFFRL_LZ4FRAME_H

#include <stdint.h>
#include <string.h>

#define LZ4F_MAGIC 0x184D2204u
#define LZ4_MIN_MATCH 4
#define LZ4_LAST_LITERALS 5 /* the last bytes of a block are always literals */
#define LZ4_MF_LIMIT 12     /* the last match starts at least this far from the end */

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const uint8_t *p) {
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

#define XXH_P1 2654435761u
#define XXH_P2 2246822519u
#define XXH_P3 3266489917u
#define XXH_P4 668265263u
#define XXH_P5 374761393u

static inline uint32_t xxh32_round(uint32_t acc, const uint8_t *p) {
    return rotl32(acc + le32(p) * XXH_P2, 13) * XXH_P1;
}

/* XXH32 with seed 0: the checksum of the LZ4 frame format. */
static uint32_t xxh32(const uint8_t *p, size_t len) {
    const uint8_t *const end = p + len;
    uint32_t h;
    if (len >= 16) {
        uint32_t v1 = XXH_P1 + XXH_P2, v2 = XXH_P2, v3 = 0, v4 = 0u - XXH_P1;
        const uint8_t *const limit = end - 16;
        do {
            v1 = xxh32_round(v1, p);
            v2 = xxh32_round(v2, p + 4);
            v3 = xxh32_round(v3, p + 8);
            v4 = xxh32_round(v4, p + 12);
            p += 16;
        } while (p <= limit);
        h = rotl32(v1, 1) + rotl32(v2, 7) + rotl32(v3, 12) + rotl32(v4, 18);
    } else {
        h = XXH_P5;
    }
    h += (uint32_t)len;
    for (; end - p >= 4; p += 4) h = rotl32(h + le32(p) * XXH_P3, 17) * XXH_P4;
    for (; p < end; p++) h = rotl32(h + *p * XXH_P5, 11) * XXH_P1;
    h ^= h >> 15;
    h *= XXH_P2;
    h ^= h >> 13;
    h *= XXH_P3;
    h ^= h >> 16;
    return h;
}

/* A length's extension bytes (each 255 continues) added to *len; 0 past the input. */
static inline int lz4_ext_length(const uint8_t **ipp, const uint8_t *iend, size_t *len) {
    const uint8_t *ip = *ipp;
    unsigned b;
    do {
        if (ip >= iend) return 0;
        b = *ip++;
        *len += b;
    } while (b == 255);
    *ipp = ip;
    return 1;
}

/*
 * One compressed block [ip, ip + n) decoded into out[op, cap). Matches may refer back
 * to out[low, op) (low: the block's start for independent blocks, 0 for linked ones).
 * Returns the new end of the output, or (size_t)-1 for a block that is not well formed.
 */
static size_t lz4_block(const uint8_t *ip, size_t n, uint8_t *out, size_t op, size_t cap,
                        size_t low) {
    const uint8_t *const iend = ip + n;
    const size_t start = op;
    size_t last_match = (size_t)-1; /* where the last match started (none yet) */
    size_t lit;
    if (n == 0) return (size_t)-1;
    for (;;) {
        if (ip >= iend) return (size_t)-1;
        unsigned token = *ip++;
        lit = token >> 4;
        if (lit == 15 && !lz4_ext_length(&ip, iend, &lit)) return (size_t)-1;
        if (lit > (size_t)(iend - ip) || lit > cap - op) return (size_t)-1;
        memcpy(out + op, ip, lit);
        ip += lit;
        op += lit;
        if (ip == iend) break; /* the last sequence: literals only */
        if (iend - ip < 2) return (size_t)-1;
        size_t offset = (size_t)ip[0] | (size_t)ip[1] << 8;
        ip += 2;
        if (offset == 0 || offset > op - low) return (size_t)-1;
        size_t len = token & 15;
        if (len == 15 && !lz4_ext_length(&ip, iend, &len)) return (size_t)-1;
        len += LZ4_MIN_MATCH;
        if (len > cap - op) return (size_t)-1;
        last_match = op;
        uint8_t *d = out + op;
        const uint8_t *s = d - offset;
        if (offset >= len) {
            memcpy(d, s, len);
        } else { /* overlapping: a repeated pattern, byte by byte */
            for (size_t j = 0; j < len; j++) d[j] = s[j];
        }
        op += len;
    }
    /* The block format's end rules, which liblz4 checks against its buffer's end (at or
       after the block's): the last match starts 12 bytes or more before the end, and
       the last sequence's literals (its last 5 bytes or more) follow it. */
    if (last_match != (size_t)-1 &&
        (op - start < LZ4_MF_LIMIT || last_match > op - LZ4_MF_LIMIT || lit < LZ4_LAST_LITERALS))
        return (size_t)-1;
    return op;
}

/* Maximum block sizes by the 3-bit id in the frame's BD byte (4..7). */
static const size_t LZ4F_BLOCK_MAX[8] = {0, 0, 0, 0, 64u << 10, 256u << 10, 1u << 20, 4u << 20};

/*
 * The content of the LZ4 frame [src, src + n), in a buffer from PyMem_Malloc (*out, of
 * *outlen bytes). 1 ok, 0 not a frame this decoder accepts (see the top), -1 no memory.
 */
static int lz4frame_decode(const uint8_t *src, size_t n, uint8_t **out, size_t *outlen) {
    const uint8_t *ip = src, *const iend = src + n;
    const size_t desc = 2 + 8; /* FLG, BD, content size */
    if (n < 4 + desc + 1 || le32(ip) != LZ4F_MAGIC) return 0;
    unsigned flg = ip[4], bd = ip[5];
    /* version 01; no block checksums, no dictionary id, reserved bits 0; content size */
    if ((flg & 0xDB) != 0x48 || (bd & 0x8F) != 0) return 0;
    size_t block_max = LZ4F_BLOCK_MAX[(bd >> 4) & 7];
    if (block_max == 0) return 0;
    int linked = !(flg & 0x20), content_checksum = (flg & 0x04) != 0;
    uint64_t size = le64(ip + 6);
    if (((xxh32(ip + 4, desc) >> 8) & 0xFF) != ip[4 + desc]) return 0;
    ip += 4 + desc + 1;
    /* one compressed byte never stands for more than 255 or so output bytes */
    if (size == 0 || size > (uint64_t)n * 256) return 0;
    uint8_t *buf = PyMem_Malloc((size_t)size);
    if (!buf) return -1;
    size_t op = 0;
    for (;;) {
        if (iend - ip < 4) goto reject;
        uint32_t word = le32(ip);
        ip += 4;
        if (word == 0) break; /* end mark */
        size_t bsize = word & 0x7FFFFFFFu;
        if (bsize == 0 || bsize > block_max || bsize > (size_t)(iend - ip)) goto reject;
        size_t room = (size_t)size - op;
        if (room > block_max) room = block_max;
        if (word & 0x80000000u) { /* stored uncompressed */
            if (bsize > room) goto reject;
            memcpy(buf + op, ip, bsize);
            op += bsize;
        } else {
            size_t end = lz4_block(ip, bsize, buf, op, op + room, linked ? 0 : op);
            if (end == (size_t)-1) goto reject;
            op = end;
        }
        ip += bsize;
    }
    if (op != size) goto reject;
    if (content_checksum) {
        if (iend - ip < 4 || le32(ip) != xxh32(buf, op)) goto reject;
        ip += 4;
    }
    if (ip != iend) goto reject; /* trailing bytes: python-lz4 decides */
    *out = buf;
    *outlen = op;
    return 1;
reject:
    PyMem_Free(buf);
    return 0;
}

#endif
