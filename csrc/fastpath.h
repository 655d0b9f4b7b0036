/* pymsgr C fast path: the declarations cffi sees (msgr/_build_fastpath.py reads this file).
 *
 * Keep this file plain C declarations only (cffi's cdef parser does not run the preprocessor
 * beyond simple #define constants).  All multi-byte wire integers are little endian.
 */

/* --- CRC-32C, exactly Ceph's ceph_crc32c(): raw register update, no pre/post inversion --- */
uint32_t msgr_crc32c(uint32_t crc, const char *buf, size_t len);
uint32_t msgr_crc32c_soft(uint32_t crc, const char *buf, size_t len);
uint32_t msgr_crc32c_zeros(uint32_t crc, size_t len);
int msgr_crc32c_backend(void);
/* crc over buf[off:off+n]; -1 if that is outside buf[0:len] (lets Python skip a slice copy) */
int64_t msgr_crc32c_at(uint32_t crc, const char *buf, size_t len, size_t off, size_t n);          /* 1 = SSE4.2 instruction path in use, 0 = slicing-by-8 */

/* --- struct sizes --- */
#define MSGR_HEADER_SIZE 53
#define MSGR_HEADER_OLD_SIZE 334
#define MSGR_FOOTER_SIZE 21
#define MSGR_FOOTER_OLD_SIZE 13

/* --- ceph_msg_header (53 bytes) ---
 * out/fields order (the contract): seq, tid, type, priority, version, front_len, middle_len,
 * data_len, data_off, src_type, src_num (s64 bit pattern), compat_version, reserved, crc.
 * parse returns 0 ok, -1 short buffer, -2 bad crc (out is filled in either case except -1). */
int msgr_parse_header(const char *buf, size_t len, size_t off, int check_crc, uint64_t *out);
/* Narrow parameter types on purpose: cffi then raises OverflowError for out-of-range values
 * instead of the C code truncating them silently. */
void msgr_pack_header(char *dst, uint64_t seq, uint64_t tid, uint16_t type, uint16_t priority,
                      uint16_t version, uint32_t front_len, uint32_t middle_len, uint32_t data_len,
                      uint16_t data_off, uint8_t src_type, uint64_t src_num,
                      uint16_t compat_version, uint16_t reserved);

/* --- ceph_msg_header_old (334 bytes, pre-NOSRCADDR) ---
 * out order: seq, tid, type, priority, version, front_len, middle_len, data_len, data_off,
 * src_type, src_num, orig_src_type, orig_src_num, reserved, crc (15 values); the two 136-byte
 * addresses stay in the buffer (offsets 45 and 190), the caller slices them. */
int msgr_parse_header_old(const char *buf, size_t len, size_t off, int check_crc, uint64_t *out);
void msgr_pack_header_old(char *dst, const uint64_t *fields, const char *src_addr,
                          const char *orig_src_addr);

/* --- footers: out = front_crc, middle_crc, data_crc, sig, flags --- */
int msgr_parse_footer(const char *buf, size_t len, size_t off, int new_format, uint64_t *out);
void msgr_pack_footer(char *dst, uint32_t front_crc, uint32_t middle_crc, uint32_t data_crc,
                      uint64_t sig, uint8_t flags, int new_format);

/* --- one outgoing message (NOSRCADDR header) in one call ---
 * Writes tag + header (54 bytes) at dst[off:] and the footer (21 bytes with MSGR_SCAN_NEW_FOOTER,
 * else 13) right after it, at dst[off + 54:]; the segments stay where they are (sent as-is).
 * flags: MSGR_SCAN_CRC_HEADER = header crc + front/middle crcs (else those are 0),
 *        MSGR_SCAN_CRC_DATA = data crc (else 0 and the footer says NOCRC), MSGR_SCAN_NEW_FOOTER.
 * Footer flags: COMPLETE (| NOCRC), sig 0. Returns the bytes written (54 + footer).
 * Header lengths are the segment lengths; narrow types make cffi refuse out-of-range values. */
int msgr_frame_msg(char *dst, size_t off, uint64_t seq, uint64_t tid, uint16_t type,
                   uint16_t priority, uint16_t version, uint16_t data_off, uint8_t src_type,
                   uint64_t src_num, uint16_t compat_version, uint16_t reserved,
                   const char *front, uint32_t front_len, const char *middle, uint32_t middle_len,
                   const char *data, uint32_t data_len, uint32_t flags);

/* --- batch frame scanner (OPEN state); see fastpath.c for the full contract (result: 4 values) --- */
#define MSGR_SCAN_SLOTS 24
#define MSGR_SCAN_CRC_HEADER 1
#define MSGR_SCAN_CRC_DATA 2
#define MSGR_SCAN_NEW_FOOTER 4
int msgr_scan_frames(const char *buf, size_t len, size_t off, uint32_t flags, uint64_t max_inline,
                     uint64_t *out, uint32_t max_frames, uint64_t *result);

/* msgr_scan_frames() status codes (return value) */
#define MSGR_SCAN_NEED_MORE 0
#define MSGR_SCAN_FULL 1
#define MSGR_SCAN_LARGE 2
#define MSGR_SCAN_CLOSE 3
#define MSGR_SCAN_BAD_TAG -1
#define MSGR_SCAN_BAD_HEADER_CRC -2
#define MSGR_SCAN_BAD_FRONT_CRC -3
#define MSGR_SCAN_BAD_MIDDLE_CRC -4
#define MSGR_SCAN_BAD_DATA_CRC -5
#define MSGR_SCAN_NOT_COMPLETE -6
