/* FCGI_STDIN records of one request, read from the web server's socket straight into an upload.
 *
 * The records path's hot loop in C: read(2) into a buffer, strip each record's header and padding,
 * feed the content to the multipart upload. It stops at the empty STDIN record (the body is
 * complete) or at the first record of any other kind or request, which it leaves, with everything
 * after it, for the caller's record parser: ABORT_REQUEST, GET_VALUES, FCGI_X_STDIN and the rest
 * keep being handled in one place.
 */
#ifndef FCGI_BACKEND_FCGI_STDIN_H
#define FCGI_BACKEND_FCGI_STDIN_H

#include <stddef.h>

#include "upload.h"

enum fcgi_stdin_outcome {
    FCGI_STDIN_ENDED = 1,     /* the empty STDIN record was read: the body is complete */
    FCGI_STDIN_OTHER = 0,     /* stopped before a record that is not this request's STDIN */
    FCGI_STDIN_FAILED = -1,   /* the connection closed or failed: see the upload's error */
    FCGI_STDIN_REJECTED = -2  /* the upload refused the body (a limit, a malformed part, a failed
                                 write): stopped after that record, the rest left on the socket */
};

/* buf (capacity cap, at least 128 KiB) starts with buffered_len bytes already received. On return
   the bytes not consumed are buf[*rest_start .. *rest_start + *rest_len). Once the upload reports
   an error the reader stops: a client need not send gigabytes to learn of a 413, and the caller
   answers, then reads a little of the rest or closes the connection. On a non-blocking fd, a
   wait of more than timeout_ms (<= 0: no limit) for the next bytes fails the input. */
int fcgi_stdin_feed(upload *u, int fd, unsigned request_id, char *buf, size_t cap, size_t buffered_len,
                    int timeout_ms, size_t *rest_start, size_t *rest_len);

#endif
