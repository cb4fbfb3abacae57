/* A large uploaded file written past the page cache (O_DIRECT), by a thread of its own.
 *
 * Buffered writes of a large file cost the writer about as much CPU as reading it from the web
 * server (every page of the cache is allocated, charged and copied into), and on a VM whose host
 * takes freed memory back, several times that. With O_DIRECT the disk takes the bytes straight
 * from the writer's buffers; a thread writes them while the worker goes on reading the body, so
 * the disk's time overlaps the network's. Buffers are DIRECT_BUFFER_SIZE bytes, aligned for
 * O_DIRECT; DIRECT_BUFFERS of them cycle between the worker (filling) and the thread (writing).
 */
#ifndef FCGI_BACKEND_DIRECT_WRITER_H
#define FCGI_BACKEND_DIRECT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#define DIRECT_ALIGN 4096               /* offsets, lengths and buffer addresses of O_DIRECT writes */
#define DIRECT_BUFFER_SIZE (1024 * 1024)
#define DIRECT_BUFFERS 4

typedef struct direct_writer direct_writer;

/* Start writing fd, whose offset must be a multiple of DIRECT_ALIGN, past the page cache. NULL
   (fd unchanged) when its file system refuses O_DIRECT or no thread or memory is to be had: the
   caller writes as before. */
direct_writer *direct_writer_start(int fd);
/* The buffer to fill next, DIRECT_BUFFER_SIZE bytes (waits for the thread to free one). */
char *direct_writer_buffer(direct_writer *w);
/* Hand the buffer of direct_writer_buffer to the thread: its first len bytes, a multiple of
   DIRECT_ALIGN. Returns 0, or the errno of a write that failed since (later ones are dropped). */
int direct_writer_queue(direct_writer *w, size_t len);
/* Wait for every queued write (or drop them, if discard), end the thread, and give fd back in
   its usual mode, its offset after the last byte written. Returns 0 or the first write's errno;
   frees w. */
int direct_writer_finish(direct_writer *w, int discard);

/* write(2) until all of data is written (EINTR retried; an O_DIRECT write the device refuses as
   misaligned goes on without O_DIRECT): 0, or the errno of the failed write. */
int write_fully(int fd, const char *data, size_t len);

#endif
