/* pymsgr C fast path, send side: frame every small message of a send turn in one call.
 *
 * Python copies the payloads of a run of small messages into one buffer with room around each
 * (one bytes.join at C speed) and passes the header fields as one flat u64 array; this file fills
 * in the tag, the 53-byte header with its CRC and the footer with the segment CRCs, in place.  One
 * foreign call per send turn instead of one per message (cffi's per-argument conversion was most
 * of a message's framing cost), and the run leaves in one buffer of one sendmsg.
 *
 * The wire layout is written once, in frame_layout.h, which msgr_frame_msg (fastpath.c) uses for
 * a single message too; the pure Python framer (msgr/protocol/outq.py) gives the same bytes,
 * which tests/test_frame_out.py checks.
 * No Python objects are touched here (cffi releases the GIL around the call).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastpath.h"
#include "frame_layout.h"
#include "frame_out.h"

int64_t msgr_frame_batch(char *buf, size_t len, const uint64_t *fields, uint32_t n,
                         uint8_t src_type, uint64_t src_num, uint32_t flags)
{
    const size_t flen = (flags & MSGR_SCAN_NEW_FOOTER) ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;
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
        write_msg_header(p + 1, f[0], f[1], (uint16_t)type, (uint16_t)prio, (uint16_t)version,
                         (uint32_t)fl, (uint32_t)ml, (uint32_t)dl, (uint16_t)data_off, src_type,
                         src_num, (uint16_t)compat, (uint16_t)reserved,
                         (flags & MSGR_SCAN_CRC_HEADER) != 0);
        const char *seg = (const char *)p + 1 + MSGR_HEADER_SIZE;
        write_sent_footer((uint8_t *)seg + body, seg, (uint32_t)fl, seg + fl, (uint32_t)ml,
                          seg + fl + ml, (uint32_t)dl, flags);
        const size_t total = 1 + MSGR_HEADER_SIZE + (size_t)body + flen;
        p += total;
        left -= total;
    }
    return left == 0 ? (int64_t)n : -1;
}

int64_t msgr_frame_one(char *dst, size_t cap, size_t off, uint64_t seq, uint64_t tid, uint64_t type,
                       uint64_t priority, uint64_t version, uint64_t data_off, uint64_t compat_version,
                       uint64_t reserved, uint8_t src_type, uint64_t src_num,
                       const char *front, size_t front_len, const char *middle, size_t middle_len,
                       const char *data, size_t data_len, uint64_t ack_seq, uint32_t flags)
{
    const size_t flen = (flags & MSGR_SCAN_NEW_FOOTER) ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;
    if ((type | priority | version | data_off | compat_version | reserved) > 0xFFFFu
        || (front_len | middle_len | data_len) > 0xFFFFFFFFu)
        return -2;
    const size_t body = front_len + middle_len + data_len;
    const size_t total = 1 + MSGR_HEADER_SIZE + body + flen + (ack_seq ? 9 : 0);
    if (off > cap || cap - off < total)
        return -1;
    uint8_t *p = (uint8_t *)dst + off;
    p[0] = TAG_MSG;
    write_msg_header(p + 1, seq, tid, (uint16_t)type, (uint16_t)priority, (uint16_t)version,
                     (uint32_t)front_len, (uint32_t)middle_len, (uint32_t)data_len, (uint16_t)data_off,
                     src_type, src_num, (uint16_t)compat_version, (uint16_t)reserved,
                     (flags & MSGR_SCAN_CRC_HEADER) != 0);
    uint8_t *seg = p + 1 + MSGR_HEADER_SIZE;
    if (front_len)
        memcpy(seg, front, front_len);
    if (middle_len)
        memcpy(seg + front_len, middle, middle_len);
    if (data_len)
        memcpy(seg + front_len + middle_len, data, data_len);
    uint8_t *f = seg + body;
    f += write_sent_footer(f, (const char *)seg, (uint32_t)front_len, (const char *)seg + front_len,
                           (uint32_t)middle_len, (const char *)seg + front_len + middle_len,
                           (uint32_t)data_len, flags);
    if (ack_seq) {
        f[0] = TAG_ACK;
        st64(f + 1, ack_seq);
    }
    return (int64_t)total;
}
