/* A segment's CRC-32C summed by a helper thread while the caller goes on (msgr/segment_crc.py).
 *
 * On one worker both ends of a large transfer share that thread; the CRC pass over a received
 * segment was a fifth of its time for a 4 MiB message (it reads the whole segment once more, from
 * memory). One process-wide helper pthread sums queued pieces in FIFO order, so each job's
 * pieces chain in order (crc = msgr_crc32c(crc, piece)); it never touches Python objects and
 * holds no GIL. The caller keeps every queued buffer alive and
 * unchanged until msgr_crc_job_wait() returned, and the job struct until then too.
 *
 * After fork() the helper thread does not exist in the child: the child starts afresh, and a
 * job queued before the fork reports "lost" (msgr_crc_job_wait returns 0; the caller then sums
 * the segment itself).
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "crc_job.h"
#include "fastpath.h"

#define RING 1024                  /* queued pieces; a full ring makes msgr_crc_job_add wait */

struct piece {
    msgr_crc_job *job;
    const char *buf;
    size_t len;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;   /* the helper: pieces queued */
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;   /* callers: a piece summed */
static struct piece ring[RING];
static uint64_t head, tail;        /* ring[head % RING] is next (or being summed); tail: next free */
static int running;                /* the helper thread exists (in this process) */
static int sleepers;               /* callers waiting on done_cv */
static uint32_t generation = 1;    /* bumped in a forked child: older jobs are lost */
static int atfork_set;

static void *helper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (head == tail)
            pthread_cond_wait(&work_cv, &mu);
        struct piece pc = ring[head % RING];
        uint32_t crc = pc.job->crc;
        pthread_mutex_unlock(&mu);
        crc = msgr_crc32c(crc, pc.buf, pc.len);
        pthread_mutex_lock(&mu);
        pc.job->crc = crc;
        pc.job->done++;
        head++;                    /* only now: the slot (and the caller's buffer) is free */
        if (sleepers)
            pthread_cond_broadcast(&done_cv);
    }
    return NULL;
}

static void after_fork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&work_cv, NULL);
    pthread_cond_init(&done_cv, NULL);
    head = tail = 0;
    running = 0;
    sleepers = 0;
    generation++;
}

void msgr_crc_job_init(msgr_crc_job *job)
{
    pthread_mutex_lock(&mu);
    job->crc = 0;
    job->queued = job->done = 0;
    job->generation = generation;
    pthread_mutex_unlock(&mu);
}

int msgr_crc_job_add(msgr_crc_job *job, const char *buf, size_t len)
{
    pthread_mutex_lock(&mu);
    if (job->generation != generation) {
        pthread_mutex_unlock(&mu);
        return 0;
    }
    if (!running) {
        if (!atfork_set) {
            pthread_atfork(NULL, NULL, after_fork_child);
            atfork_set = 1;
        }
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&t, &attr, helper, NULL);
        pthread_attr_destroy(&attr);
        if (err) {
            pthread_mutex_unlock(&mu);
            return 0;              /* no thread: the caller sums this piece itself */
        }
        running = 1;
    }
    while (tail - head >= RING) {
        sleepers++;
        pthread_cond_wait(&done_cv, &mu);
        sleepers--;
    }
    ring[tail % RING] = (struct piece){job, buf, len};
    tail++;
    job->queued++;
    pthread_cond_signal(&work_cv);
    pthread_mutex_unlock(&mu);
    return 1;
}

int msgr_crc_job_wait(msgr_crc_job *job)
{
    pthread_mutex_lock(&mu);
    if (job->generation != generation) {
        pthread_mutex_unlock(&mu);
        return 0;
    }
    while (job->done != job->queued) {
        sleepers++;
        pthread_cond_wait(&done_cv, &mu);
        sleepers--;
    }
    pthread_mutex_unlock(&mu);
    return 1;
}
