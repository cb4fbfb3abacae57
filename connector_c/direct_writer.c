/* O_DIRECT writes from a thread: see direct_writer.h. */
#define _GNU_SOURCE
#include "direct_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

struct direct_writer {
    int fd;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;         /* a buffer queued or written, or the end asked for */
    char *buffers[DIRECT_BUFFERS];
    size_t lengths[DIRECT_BUFFERS]; /* of the queued buffers */
    unsigned queued_from, queued;   /* buffers queued for the thread: a ring from queued_from */
    unsigned filling;               /* the worker's buffer (the one after the queued ones) */
    int ending, discard;
    int error;                      /* errno of the first failed write; later writes are skipped */
};

static int is_direct(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_DIRECT);
}

/* O_DIRECT on or off for fd's later writes: 0, or -1 with errno set. */
static int set_direct(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, on ? flags | O_DIRECT : flags & ~O_DIRECT);
}

int write_fully(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            int error = errno;
            if (error == EINTR)
                continue;
            /* a device whose blocks are larger than DIRECT_ALIGN: the rest through the cache */
            if (error == EINVAL && is_direct(fd) && set_direct(fd, 0) == 0)
                continue;
            return error;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *write_queued(void *arg)
{
    direct_writer *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->queued && !w->ending)
            pthread_cond_wait(&w->changed, &w->lock);
        if (!w->queued)
            break; /* ending, all written */
        unsigned i = w->queued_from;
        int skip = w->error || w->discard;
        pthread_mutex_unlock(&w->lock);
        int error = skip ? 0 : write_fully(w->fd, w->buffers[i], w->lengths[i]);
        pthread_mutex_lock(&w->lock);
        if (error && !w->error)
            w->error = error;
        w->queued_from = (w->queued_from + 1) % DIRECT_BUFFERS;
        w->queued--;
        pthread_cond_broadcast(&w->changed);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void free_writer(direct_writer *w)
{
    for (unsigned i = 0; i < DIRECT_BUFFERS; i++)
        free(w->buffers[i]);
    free(w);
}

direct_writer *direct_writer_start(int fd)
{
    direct_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->fd = fd;
    for (unsigned i = 0; i < DIRECT_BUFFERS; i++) {
        if (posix_memalign((void **)&w->buffers[i], DIRECT_ALIGN, DIRECT_BUFFER_SIZE) != 0) {
            w->buffers[i] = NULL;
            free_writer(w);
            return NULL;
        }
    }
    if (set_direct(fd, 1) != 0) { /* e.g. tmpfs before Linux 6.6 */
        free_writer(w);
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->changed, NULL);
    /* The thread takes no signals: the worker's own (a request's timer, a stop) stay its. */
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    int failed = pthread_create(&w->thread, NULL, write_queued, w);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (failed) {
        set_direct(fd, 0);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->changed);
        free_writer(w);
        return NULL;
    }
    return w;
}

char *direct_writer_buffer(direct_writer *w)
{
    return w->buffers[w->filling];
}

int direct_writer_queue(direct_writer *w, size_t len)
{
    pthread_mutex_lock(&w->lock);
    w->lengths[w->filling] = len;
    w->queued++;
    w->filling = (w->filling + 1) % DIRECT_BUFFERS;
    pthread_cond_broadcast(&w->changed);
    while (w->queued == DIRECT_BUFFERS) /* the next one to fill is still queued */
        pthread_cond_wait(&w->changed, &w->lock);
    int error = w->error;
    pthread_mutex_unlock(&w->lock);
    return error;
}

int direct_writer_finish(direct_writer *w, int discard)
{
    pthread_mutex_lock(&w->lock);
    w->ending = 1;
    w->discard = discard;
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    int error = w->error;
    set_direct(w->fd, 0);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->changed);
    free_writer(w);
    return error;
}
