/* pymsgr C fast path: the msgr v1 wire layout of a message frame, written once for the C files
 * that pack it (fastpath.c: one header / footer / message; frame_out.c: a run of messages).
 *
 * Not a cffi declaration file: static inline code only, included by the .c files (cffi reads
 * fastpath.h and frame_out.h).  All multi-byte wire integers are little endian whatever the host.
 */
#ifndef MSGR_FRAME_LAYOUT_H
#define MSGR_FRAME_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastpath.h"

/* frame tags (the byte before each frame once the connection is open) */
enum { TAG_CLOSE = 6, TAG_MSG = 7, TAG_ACK = 8, TAG_KEEPALIVE = 9,
       TAG_KEEPALIVE2 = 14, TAG_KEEPALIVE2_ACK = 15 };
/* ceph_msg_footer flags */
enum { FOOTER_COMPLETE = 1, FOOTER_NOCRC = 2 };

/* ---- little-endian stores ---- */

static inline void st16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static inline void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void st64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 8);
#else
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
#endif
}

/* ---- ceph_msg_header (53 bytes, NOSRCADDR) ----
 * with_crc = 0 leaves the crc 0: a sender that does not compute it (a checking receiver refuses it). */
static inline void write_msg_header(uint8_t *h, uint64_t seq, uint64_t tid, uint16_t type,
                                    uint16_t priority, uint16_t version, uint32_t front_len,
                                    uint32_t middle_len, uint32_t data_len, uint16_t data_off,
                                    uint8_t src_type, uint64_t src_num, uint16_t compat_version,
                                    uint16_t reserved, int with_crc)
{
    st64(h, seq);
    st64(h + 8, tid);
    st16(h + 16, type);
    st16(h + 18, priority);
    st16(h + 20, version);
    st32(h + 22, front_len);
    st32(h + 26, middle_len);
    st32(h + 30, data_len);
    st16(h + 34, data_off);
    h[36] = src_type;
    st64(h + 37, src_num);
    st16(h + 45, compat_version);
    st16(h + 47, reserved);
    st32(h + 49, with_crc ? msgr_crc32c(0, (const char *)h, 49) : 0);
}

/* ---- ceph_msg_footer (21 bytes) or ceph_msg_footer_old (13 bytes, no sig) ----
 * Returns the footer's size. */
static inline size_t write_msg_footer(uint8_t *f, uint32_t front_crc, uint32_t middle_crc,
                                      uint32_t data_crc, uint64_t sig, uint8_t flags,
                                      int new_format)
{
    st32(f, front_crc);
    st32(f + 4, middle_crc);
    st32(f + 8, data_crc);
    if (new_format) {
        st64(f + 12, sig);
        f[20] = flags;
        return MSGR_FOOTER_SIZE;
    }
    f[12] = flags;
    return MSGR_FOOTER_OLD_SIZE;
}

/* The footer an outgoing message gets, from msgr_frame_msg's flags (fastpath.h): segment crcs
 * as MSGR_SCAN_CRC_HEADER / MSGR_SCAN_CRC_DATA ask (else 0; an empty segment's crc is 0), sig 0,
 * COMPLETE, | NOCRC without a data crc.  Returns the footer's size. */
static inline size_t write_sent_footer(uint8_t *f, const char *front, uint32_t front_len,
                                       const char *middle, uint32_t middle_len,
                                       const char *data, uint32_t data_len, uint32_t flags)
{
    const int crc_h = (flags & MSGR_SCAN_CRC_HEADER) != 0;
    const int crc_d = (flags & MSGR_SCAN_CRC_DATA) != 0;
    return write_msg_footer(f,
                            crc_h && front_len ? msgr_crc32c(0, front, front_len) : 0,
                            crc_h && middle_len ? msgr_crc32c(0, middle, middle_len) : 0,
                            crc_d && data_len ? msgr_crc32c(0, data, data_len) : 0,
                            0, crc_d ? FOOTER_COMPLETE : (FOOTER_COMPLETE | FOOTER_NOCRC),
                            (flags & MSGR_SCAN_NEW_FOOTER) != 0);
}

#endif /* MSGR_FRAME_LAYOUT_H */
