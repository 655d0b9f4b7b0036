/* pymsgr C fast path: a large segment's CRC-32C summed by a helper thread, piece by piece, in
 * order (csrc/crc_job.c; msgr/segment_crc.py).  The declarations cffi sees (msgr/_build_fastpath.py
 * reads this file in a cdef block of its own).  Plain C only.
 *
 * init: before the first add.  add: queue buf[0:len] (the caller keeps it alive and unchanged, and
 * the job too, until wait returned); 1 = queued, 0 = not (no thread could start, or the job is from
 * before a fork): the caller sums it itself.  wait: until every queued piece is summed; then
 * job->crc is msgr_crc32c(0, the queued pieces in order); 0 = the job was lost to a fork. */
typedef struct {
    uint32_t crc;
    uint32_t queued;
    uint32_t done;
    uint32_t generation;
} msgr_crc_job;

void msgr_crc_job_init(msgr_crc_job *job);
int msgr_crc_job_add(msgr_crc_job *job, const char *buf, size_t len);
int msgr_crc_job_wait(msgr_crc_job *job);
