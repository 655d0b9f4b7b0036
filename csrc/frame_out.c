/* pymsgr C fast path, send side: frame every small message of a send turn in one call.
 *
 * Python copies the payloads of a run of small messages into one buffer with room around each
 * (one bytes.join at C speed) and passes the header fields as one flat u64 array; this file fills
 * in the tag, the 53-byte header with its CRC and the footer with the segment CRCs, in place.  One
 * foreign call per send turn instead of one per message (cffi's per-argument conversion was most
 * of a message's framing cost), and the run leaves in one buffer of one sendmsg.
 *
 * The wire layout is the one msgr_frame_msg (fastpath.c) writes for a single message; the pure
 * Python framer (msgr/protocol/outq.py) gives the same bytes, which tests/test_frame_out.py checks.
 * No Python objects are touched here (cffi releases the GIL around the call).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastpath.h"
#include "frame_out.h"

enum { TAG_MSG = 7, FOOTER_COMPLETE = 1, FOOTER_NOCRC = 2 };

static inline void put16(uint8_t *p, uint64_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static inline void put32(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 8);
#else
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
#endif
}

int64_t msgr_frame_batch(char *buf, size_t len, const uint64_t *fields, uint32_t n,
                         uint8_t src_type, uint64_t src_num, uint32_t flags)
{
    const int crc_h = (flags & MSGR_SCAN_CRC_HEADER) != 0;
    const int crc_d = (flags & MSGR_SCAN_CRC_DATA) != 0;
    const size_t flen = (flags & MSGR_SCAN_NEW_FOOTER) ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;
    const uint8_t fflags = crc_d ? FOOTER_COMPLETE : (FOOTER_COMPLETE | FOOTER_NOCRC);
    uint8_t *p = (uint8_t *)buf;
    size_t left = len;
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t *f = fields + (size_t)i * MSGR_FRAME_FIELDS;
        const uint64_t type = f[2], prio = f[3], version = f[4], data_off = f[5];
        const uint64_t compat = f[6], reserved = f[7];
        const uint64_t fl = f[8], ml = f[9], dl = f[10];
        /* the narrow wire fields: refuse rather than truncate (the caller reports which message) */
        if ((type | prio | version | data_off | compat | reserved) > 0xFFFFu
            || (fl | ml | dl) > 0xFFFFFFFFu)
            return i;
        const uint64_t body = fl + ml + dl;
        if (left < 1 + MSGR_HEADER_SIZE + flen || left - (1 + MSGR_HEADER_SIZE + flen) < body)
            return -1;
        p[0] = TAG_MSG;
        uint8_t *h = p + 1;
        put64(h, f[0]);
        put64(h + 8, f[1]);
        put16(h + 16, type);
        put16(h + 18, prio);
        put16(h + 20, version);
        put32(h + 22, fl);
        put32(h + 26, ml);
        put32(h + 30, dl);
        put16(h + 34, data_off);
        h[36] = src_type;
        put64(h + 37, src_num);
        put16(h + 45, compat);
        put16(h + 47, reserved);
        /* a sender that does not compute a crc leaves it 0 (a checking receiver refuses it) */
        put32(h + 49, crc_h ? msgr_crc32c(0, (const char *)h, 49) : 0);
        const char *seg = (const char *)(h + MSGR_HEADER_SIZE);
        uint8_t *ft = (uint8_t *)seg + body;
        put32(ft, crc_h && fl ? msgr_crc32c(0, seg, (size_t)fl) : 0);
        put32(ft + 4, crc_h && ml ? msgr_crc32c(0, seg + fl, (size_t)ml) : 0);
        put32(ft + 8, crc_d && dl ? msgr_crc32c(0, seg + fl + ml, (size_t)dl) : 0);
        if (flen == MSGR_FOOTER_SIZE) {
            put64(ft + 12, 0);
            ft[20] = fflags;
        } else {
            ft[12] = fflags;
        }
        const size_t total = 1 + MSGR_HEADER_SIZE + (size_t)body + flen;
        p += total;
        left -= total;
    }
    return left == 0 ? (int64_t)n : -1;
}
