/* pymsgr C fast path, compiled by cffi (API/out-of-line mode) into msgr._fastpath.
 *
 * 1. CRC-32C with Ceph's semantics (ceph_crc32c): the register starts at the caller's seed and
 *    the result is not inverted.  Two implementations, picked once at load time:
 *      - SSE4.2 `crc32` instruction, three independent streams over long buffers (the instruction
 *        has a 3-cycle latency but 1-cycle throughput, so one stream leaves 2/3 of the unit idle);
 *        the streams are joined with a "feed N zero bytes" operator applied by table lookup;
 *      - portable slicing-by-8 tables otherwise.
 *    The hardware function carries __attribute__((target("sse4.2"))) so the module builds and
 *    runs on compilers/CPUs without -msse4.2; it is only ever called when cpuid says so.
 * 2. Packed wire structs (ceph_msg_header current/old, footers) and a header parse that also
 *    verifies the header CRC, so Python pays one foreign call per header instead of several.
 * 3. msgr_scan_frames(): walks every complete small frame of an OPEN-state receive buffer in one
 *    call (contract below, above the function).
 *
 * GIL: cffi's API mode wraps every call in Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS
 * (checked in the generated msgr/_fastpath.c), so a CRC over a large buffer runs without the GIL.
 * The flip side is that nothing here may touch Python objects, and buffers the caller passes must
 * stay alive (cffi's from_buffer / bytes arguments keep them alive for the duration of the call).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastpath.h"
#include "frame_layout.h"

/* -DMSGR_NO_HW_CRC builds the portable path only (how a non-x86 build behaves). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(MSGR_NO_HW_CRC)
#define MSGR_HAVE_X86_CRC 1
#include <nmmintrin.h>
#else
#define MSGR_HAVE_X86_CRC 0
#endif

#define POLY_REFLECTED 0x82F63B78u


/* Stream lengths for the 3-way interleave: LONG for big buffers, SHORT for the tail. */
#define CRC_LONG 8192
#define CRC_SHORT 256

static uint32_t soft_table[8][256];
static uint32_t zeros_long[4][256];   /* feed CRC_LONG zero bytes into a register */
static uint32_t zeros_short[4][256];  /* feed CRC_SHORT zero bytes */
static int use_hw;
static const uint8_t zero_block[CRC_LONG];

/* ---- little-endian loads (the wire is LE whatever the host is; stores: frame_layout.h) ---- */

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline uint32_t ld32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
#endif
}

static inline uint64_t ld64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32);
#endif
}

/* ---- portable CRC: slicing-by-8 ---- */

uint32_t msgr_crc32c_soft(uint32_t crc, const char *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)buf;
    while (len >= 8) {
        uint64_t w = ld64(p) ^ crc;
        crc = soft_table[7][w & 0xff] ^ soft_table[6][(w >> 8) & 0xff] ^
              soft_table[5][(w >> 16) & 0xff] ^ soft_table[4][(w >> 24) & 0xff] ^
              soft_table[3][(w >> 32) & 0xff] ^ soft_table[2][(w >> 40) & 0xff] ^
              soft_table[1][(w >> 48) & 0xff] ^ soft_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = soft_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

/* The raw register update is linear over GF(2), so "feed n zero bytes" is a 32x32 bit matrix;
 * it is stored as 4 byte-indexed tables, making one application 4 lookups. */
static inline uint32_t shift(uint32_t (*z)[256], uint32_t crc)
{
    return z[0][crc & 0xff] ^ z[1][(crc >> 8) & 0xff] ^ z[2][(crc >> 16) & 0xff] ^ z[3][crc >> 24];
}

static void build_shift(uint32_t (*z)[256], size_t n)
{
    uint32_t col[32];
    for (int i = 0; i < 32; i++)  /* image of each basis vector: feed n zeros by the slow path */
        col[i] = msgr_crc32c_soft(1u << i, (const char *)zero_block, n);
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int j = 0; j < 8; j++)
                if (b & (1 << j))
                    v ^= col[8 * k + j];
            z[k][b] = v;
        }
}

/* ---- SSE4.2 CRC ---- */

#if MSGR_HAVE_X86_CRC
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c0 = crc;
    /* three streams of CRC_LONG, then of CRC_SHORT, joined as shift(shift(a)^b)^c */
    while (len >= 3 * CRC_LONG) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + CRC_LONG;
        do {
            c0 = _mm_crc32_u64(c0, ld64(p));
            c1 = _mm_crc32_u64(c1, ld64(p + CRC_LONG));
            c2 = _mm_crc32_u64(c2, ld64(p + 2 * CRC_LONG));
            p += 8;
        } while (p < end);
        c0 = shift(zeros_long, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(zeros_long, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * CRC_LONG;
        len -= 3 * CRC_LONG;
    }
    while (len >= 3 * CRC_SHORT) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + CRC_SHORT;
        do {
            c0 = _mm_crc32_u64(c0, ld64(p));
            c1 = _mm_crc32_u64(c1, ld64(p + CRC_SHORT));
            c2 = _mm_crc32_u64(c2, ld64(p + 2 * CRC_SHORT));
            p += 8;
        } while (p < end);
        c0 = shift(zeros_short, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(zeros_short, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * CRC_SHORT;
        len -= 3 * CRC_SHORT;
    }
    while (len >= 8) {
        c0 = _mm_crc32_u64(c0, ld64(p));
        p += 8;
        len -= 8;
    }
    uint32_t c = (uint32_t)c0;
    while (len--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t msgr_crc32c(uint32_t crc, const char *buf, size_t len)
{
#if MSGR_HAVE_X86_CRC
    if (use_hw)
        return crc_hw(crc, (const uint8_t *)buf, len);
#endif
    return msgr_crc32c_soft(crc, buf, len);
}

/* Ceph's ceph_crc32c(crc, NULL, len): the CRC of len zero bytes, without a zero buffer. */
uint32_t msgr_crc32c_zeros(uint32_t crc, size_t len)
{
    for (; len >= CRC_LONG; len -= CRC_LONG)
        crc = shift(zeros_long, crc);
    for (; len >= CRC_SHORT; len -= CRC_SHORT)
        crc = shift(zeros_short, crc);
    return msgr_crc32c(crc, (const char *)zero_block, len);
}

int msgr_crc32c_backend(void) { return use_hw; }

int64_t msgr_crc32c_at(uint32_t crc, const char *buf, size_t len, size_t off, size_t n)
{
    if (off > len || n > len - off)
        return -1;
    return msgr_crc32c(crc, buf + off, n);
}

/* Tables and CPU detection once, when the shared object is loaded (before any caller can race). */
__attribute__((constructor))
static void msgr_fastpath_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY_REFLECTED : c >> 1;
        soft_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            soft_table[t][i] = (soft_table[t - 1][i] >> 8) ^ soft_table[0][soft_table[t - 1][i] & 0xff];
    build_shift(zeros_long, CRC_LONG);
    build_shift(zeros_short, CRC_SHORT);
#if MSGR_HAVE_X86_CRC
    __builtin_cpu_init();  /* required when __builtin_cpu_supports runs inside a constructor */
    use_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

/* ---- ceph_msg_header (53 bytes) ---- */

static inline void header_fields(const uint8_t *p, uint64_t *out)
{
    out[0] = ld64(p);            /* seq */
    out[1] = ld64(p + 8);        /* tid */
    out[2] = ld16(p + 16);       /* type */
    out[3] = ld16(p + 18);       /* priority */
    out[4] = ld16(p + 20);       /* version */
    out[5] = ld32(p + 22);       /* front_len */
    out[6] = ld32(p + 26);       /* middle_len */
    out[7] = ld32(p + 30);       /* data_len */
    out[8] = ld16(p + 34);       /* data_off */
    out[9] = p[36];              /* src.type */
    out[10] = ld64(p + 37);      /* src.num (s64 bit pattern) */
    out[11] = ld16(p + 45);      /* compat_version */
    out[12] = ld16(p + 47);      /* reserved */
    out[13] = ld32(p + 49);      /* crc */
}

int msgr_parse_header(const char *buf, size_t len, size_t off, int check_crc, uint64_t *out)
{
    if (off > len || len - off < MSGR_HEADER_SIZE)
        return -1;
    const uint8_t *p = (const uint8_t *)buf + off;
    header_fields(p, out);
    if (check_crc && msgr_crc32c(0, (const char *)p, 49) != (uint32_t)out[13])
        return -2;
    return 0;
}

void msgr_pack_header(char *dst, uint64_t seq, uint64_t tid, uint16_t type, uint16_t priority,
                      uint16_t version, uint32_t front_len, uint32_t middle_len, uint32_t data_len,
                      uint16_t data_off, uint8_t src_type, uint64_t src_num,
                      uint16_t compat_version, uint16_t reserved)
{
    write_msg_header((uint8_t *)dst, seq, tid, type, priority, version, front_len, middle_len,
                     data_len, data_off, src_type, src_num, compat_version, reserved, 1);
}

/* ---- one outgoing message: tag + header + footer around its segments ---- */

int msgr_frame_msg(char *dst, size_t off, uint64_t seq, uint64_t tid, uint16_t type,
                   uint16_t priority, uint16_t version, uint16_t data_off, uint8_t src_type,
                   uint64_t src_num, uint16_t compat_version, uint16_t reserved,
                   const char *front, uint32_t front_len, const char *middle, uint32_t middle_len,
                   const char *data, uint32_t data_len, uint32_t flags)
{
    uint8_t *p = (uint8_t *)dst + off;
    p[0] = TAG_MSG;
    write_msg_header(p + 1, seq, tid, type, priority, version, front_len, middle_len, data_len,
                     data_off, src_type, src_num, compat_version, reserved,
                     (flags & MSGR_SCAN_CRC_HEADER) != 0);
    return 1 + MSGR_HEADER_SIZE
        + (int)write_sent_footer(p + 1 + MSGR_HEADER_SIZE, front, front_len, middle, middle_len,
                                 data, data_len, flags);
}

/* ---- ceph_msg_header_old (334 bytes): src/orig_src are ceph_entity_inst (name 9 + addr 136) ---- */

int msgr_parse_header_old(const char *buf, size_t len, size_t off, int check_crc, uint64_t *out)
{
    if (off > len || len - off < MSGR_HEADER_OLD_SIZE)
        return -1;
    const uint8_t *p = (const uint8_t *)buf + off;
    out[0] = ld64(p);
    out[1] = ld64(p + 8);
    out[2] = ld16(p + 16);
    out[3] = ld16(p + 18);
    out[4] = ld16(p + 20);
    out[5] = ld32(p + 22);
    out[6] = ld32(p + 26);
    out[7] = ld32(p + 30);
    out[8] = ld16(p + 34);
    out[9] = p[36];              /* src.name.type; src.addr at 45..180 */
    out[10] = ld64(p + 37);
    out[11] = p[181];            /* orig_src.name.type; orig_src.addr at 190..325 */
    out[12] = ld64(p + 182);
    out[13] = ld32(p + 326);     /* reserved */
    out[14] = ld32(p + 330);     /* crc over bytes 0..329 */
    if (check_crc && msgr_crc32c(0, (const char *)p, 330) != (uint32_t)out[14])
        return -2;
    return 0;
}

/* fields: the first 14 values of the parse order (crc excluded); addresses are 136 bytes each. */
void msgr_pack_header_old(char *dst, const uint64_t *f, const char *src_addr,
                          const char *orig_src_addr)
{
    uint8_t *p = (uint8_t *)dst;
    st64(p, f[0]);
    st64(p + 8, f[1]);
    st16(p + 16, (uint32_t)f[2]);
    st16(p + 18, (uint32_t)f[3]);
    st16(p + 20, (uint32_t)f[4]);
    st32(p + 22, (uint32_t)f[5]);
    st32(p + 26, (uint32_t)f[6]);
    st32(p + 30, (uint32_t)f[7]);
    st16(p + 34, (uint32_t)f[8]);
    p[36] = (uint8_t)f[9];
    st64(p + 37, f[10]);
    memcpy(p + 45, src_addr, 136);
    p[181] = (uint8_t)f[11];
    st64(p + 182, f[12]);
    memcpy(p + 190, orig_src_addr, 136);
    st32(p + 326, (uint32_t)f[13]);
    st32(p + 330, msgr_crc32c(0, dst, 330));
}

/* ---- footers ---- */

int msgr_parse_footer(const char *buf, size_t len, size_t off, int new_format, uint64_t *out)
{
    size_t need = new_format ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;
    if (off > len || len - off < need)
        return -1;
    const uint8_t *p = (const uint8_t *)buf + off;
    out[0] = ld32(p);
    out[1] = ld32(p + 4);
    out[2] = ld32(p + 8);
    out[3] = new_format ? ld64(p + 12) : 0;   /* an old footer reads as sig 0 */
    out[4] = p[need - 1];
    return 0;
}

void msgr_pack_footer(char *dst, uint32_t front_crc, uint32_t middle_crc, uint32_t data_crc,
                      uint64_t sig, uint8_t flags, int new_format)
{
    write_msg_footer((uint8_t *)dst, front_crc, middle_crc, data_crc, sig, flags, new_format);
}

/* ---- batch frame scanner ----
 *
 * msgr_scan_frames(buf, len, off, flags, max_inline, out, max_frames, result) -> status
 *
 * Walks buf[off:len], a receive buffer of a connection in the OPEN state (after the handshake,
 * NOSRCADDR negotiated so headers are 53 bytes), and describes each *complete* frame in one
 * record of MSGR_SCAN_SLOTS uint64 values in out[]:
 *   [0] tag  [1] offset of the tag byte in buf  [2] frame length, tag byte included
 *   TAG_MSG (7):  [3..16] the 14 header fields in msgr_parse_header order (src_num as an s64 bit
 *                 pattern), [17] front_crc [18] middle_crc [19] data_crc [20] sig
 *                 [21] footer flags [22] offset of the front in buf ([23] is 0)
 *   TAG_ACK (8):  [3] acked seq
 *   TAG_KEEPALIVE2 (14) / TAG_KEEPALIVE2_ACK (15): [3] tv_sec [4] tv_nsec
 *   TAG_KEEPALIVE (9): nothing more.     Unused slots are 0.
 * flags: MSGR_SCAN_CRC_HEADER verifies header, front and middle CRCs (ms_crc_header);
 *        MSGR_SCAN_CRC_DATA verifies the data CRC unless the footer says NOCRC (ms_crc_data);
 *        MSGR_SCAN_NEW_FOOTER = 21-byte footers (MSG_AUTH negotiated), else 13-byte ones.
 * It stops at the first frame it cannot hand over whole and returns why:
 *   NEED_MORE  the frame at result[0] is incomplete (or the buffer is used up);
 *   FULL       max_frames records were written;
 *   LARGE      a TAG_MSG at result[0] whose front+middle+data exceeds max_inline: its header is
 *              complete and (if asked) CRC-checked, the body may not be here yet; the caller reads
 *              it into a buffer of its own;
 *   CLOSE      a TAG_CLOSE at result[0] (not consumed; the connection is ending);
 *   <0         the frame at result[0] is bad: BAD_TAG, BAD_HEADER_CRC, BAD_FRONT_CRC,
 *              BAD_MIDDLE_CRC, BAD_DATA_CRC, NOT_COMPLETE (footer lacks the COMPLETE flag).
 * result[0] = offset just past the last record (where the caller resumes), result[1] = records,
 * result[2] = how many of them are TAG_MSG, result[3] = the sum of their front+middle+data lengths
 * (so the caller can take the receive throttles for the whole scan without walking the records).
 * Records before a stop are valid in every case, errors included.
 */
int msgr_scan_frames(const char *buf, size_t len, size_t off, uint32_t flags, uint64_t max_inline,
                     uint64_t *out, uint32_t max_frames, uint64_t *result)
{
    const uint8_t *b = (const uint8_t *)buf;
    const size_t flen = (flags & MSGR_SCAN_NEW_FOOTER) ? MSGR_FOOTER_SIZE : MSGR_FOOTER_OLD_SIZE;
    size_t pos = off;
    uint32_t n = 0;
    uint64_t nmsgs = 0, nbytes = 0;
    int status = MSGR_SCAN_NEED_MORE;

    while (pos < len) {
        if (n >= max_frames) {
            status = MSGR_SCAN_FULL;
            break;
        }
        const size_t avail = len - pos;
        const uint8_t tag = b[pos];
        uint64_t *r = out + (size_t)n * MSGR_SCAN_SLOTS;
        size_t flen_total;

        if (tag == TAG_MSG) {
            if (avail < 1 + MSGR_HEADER_SIZE)
                break;
            const uint8_t *h = b + pos + 1;
            const uint32_t hcrc = ld32(h + 49);
            if ((flags & MSGR_SCAN_CRC_HEADER) && msgr_crc32c(0, (const char *)h, 49) != hcrc) {
                status = MSGR_SCAN_BAD_HEADER_CRC;
                break;
            }
            const uint64_t front = ld32(h + 22), middle = ld32(h + 26), data = ld32(h + 30);
            const uint64_t body = front + middle + data;
            if (body > max_inline) {
                status = MSGR_SCAN_LARGE;
                break;
            }
            flen_total = 1 + MSGR_HEADER_SIZE + (size_t)body + flen;
            if (avail < flen_total)
                break;
            const uint8_t *fp = h + MSGR_HEADER_SIZE;       /* front */
            const uint8_t *ft = fp + body;                  /* footer */
            const uint32_t fcrc = ld32(ft), mcrc = ld32(ft + 4), dcrc = ld32(ft + 8);
            const uint32_t fflags = ft[flen - 1];
            if (!(fflags & FOOTER_COMPLETE)) {
                status = MSGR_SCAN_NOT_COMPLETE;
                break;
            }
            if (flags & MSGR_SCAN_CRC_HEADER) {
                if (msgr_crc32c(0, (const char *)fp, front) != fcrc) {
                    status = MSGR_SCAN_BAD_FRONT_CRC;
                    break;
                }
                if (msgr_crc32c(0, (const char *)fp + front, middle) != mcrc) {
                    status = MSGR_SCAN_BAD_MIDDLE_CRC;
                    break;
                }
            }
            if ((flags & MSGR_SCAN_CRC_DATA) && !(fflags & FOOTER_NOCRC) &&
                msgr_crc32c(0, (const char *)fp + front + middle, data) != dcrc) {
                status = MSGR_SCAN_BAD_DATA_CRC;
                break;
            }
            header_fields(h, r + 3);
            r[17] = fcrc;
            r[18] = mcrc;
            r[19] = dcrc;
            r[20] = (flags & MSGR_SCAN_NEW_FOOTER) ? ld64(ft + 12) : 0;
            r[21] = fflags;
            r[22] = pos + 1 + MSGR_HEADER_SIZE;
            r[23] = 0;
            nmsgs++;
            nbytes += body;
        } else if (tag == TAG_ACK || tag == TAG_KEEPALIVE2 || tag == TAG_KEEPALIVE2_ACK) {
            if (avail < 9)
                break;
            memset(r, 0, MSGR_SCAN_SLOTS * sizeof(uint64_t));
            if (tag == TAG_ACK) {
                r[3] = ld64(b + pos + 1);
            } else {
                r[3] = ld32(b + pos + 1);
                r[4] = ld32(b + pos + 5);
            }
            flen_total = 9;
        } else if (tag == TAG_KEEPALIVE) {
            memset(r, 0, MSGR_SCAN_SLOTS * sizeof(uint64_t));
            flen_total = 1;
        } else if (tag == TAG_CLOSE) {
            status = MSGR_SCAN_CLOSE;
            break;
        } else {
            status = MSGR_SCAN_BAD_TAG;
            break;
        }
        r[0] = tag;
        r[1] = pos;
        r[2] = flen_total;
        pos += flen_total;
        n++;
    }
    result[0] = pos;
    result[1] = n;
    result[2] = nmsgs;
    result[3] = nbytes;
    return status;
}
