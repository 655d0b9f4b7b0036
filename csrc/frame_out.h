/* pymsgr C fast path, send side: the declarations cffi sees for csrc/frame_out.c
 * (msgr/_build_fastpath.py reads this file in a cdef block of its own).  Plain C only. */

/* u64 fields per message in msgr_frame_batch's fields array, in this order */
#define MSGR_FRAME_FIELDS 11

/* --- frame a run of small messages (NOSRCADDR header) in place, in one call ---
 * buf holds the run back to back: per message 54 bytes of room (tag + header), its front, middle
 * and data (already copied there), then room for its footer (21 bytes with MSGR_SCAN_NEW_FOOTER,
 * else 13).  fields: MSGR_FRAME_FIELDS u64 per message: seq, tid, type, priority, version,
 * data_off, compat_version, reserved, front_len, middle_len, data_len.
 * flags as msgr_frame_msg (fastpath.h): MSGR_SCAN_CRC_HEADER, MSGR_SCAN_CRC_DATA,
 * MSGR_SCAN_NEW_FOOTER.  Writes every tag, header (with its crc) and footer (segment crcs,
 * COMPLETE | NOCRC as msgr_frame_msg).
 * Returns n when all are framed; k < n: message k has a field out of range of its wire type
 * (messages from k on are not framed); -1: buf is not exactly the size the lengths say. */
int64_t msgr_frame_batch(char *buf, size_t len, const uint64_t *fields, uint32_t n,
                         uint8_t src_type, uint64_t src_num, uint32_t flags);

/* --- frame one small message (NOSRCADDR header) into an arena, and the cumulative ACK ---
 * Writes at dst + off: tag + header (with its crc when MSGR_SCAN_CRC_HEADER), front, middle and
 * data copied from their buffers, the footer (as msgr_frame_msg), then, when ack_seq != 0, an ACK
 * (tag + u64 seq).  One foreign call for a reply: no field array, no payload join, and the ACK
 * rides in the same buffer.  Returns the bytes written; -1 when they do not fit in cap - off;
 * -2 when a field is out of range of its wire type (nothing is written then). */
int64_t msgr_frame_one(char *dst, size_t cap, size_t off, uint64_t seq, uint64_t tid, uint64_t type,
                       uint64_t priority, uint64_t version, uint64_t data_off, uint64_t compat_version,
                       uint64_t reserved, uint8_t src_type, uint64_t src_num,
                       const char *front, size_t front_len, const char *middle, size_t middle_len,
                       const char *data, size_t data_len, uint64_t ack_seq, uint32_t flags);
