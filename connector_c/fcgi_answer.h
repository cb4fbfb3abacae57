/* A responder's answer on the wire: STDOUT (or STDERR) content framed into records and sent, with
 * END_REQUEST when it is the last, in one sendmsg that copies nothing.
 *
 * The content comes in two pieces, head and body (the CGI header block and the page), so the page
 * is not copied to put the header block in front of it; one record may hold the end of one and
 * the start of the other. Records carry at most FCGI_ANSWER_RECORD_MAX bytes, a multiple of 8, so
 * none needs padding. The record headers are built on the stack; the iovecs point at the
 * caller's bytes. records.frame_answer is the same framing in Python: the caller uses it to send
 * what a socket did not take at once.
 */
#ifndef FCGI_BACKEND_FCGI_ANSWER_H
#define FCGI_BACKEND_FCGI_ANSWER_H

#include <stddef.h>

#define FCGI_ANSWER_RECORD_MAX 65528
#define FCGI_ANSWER_MAX_RECORDS 64   /* more content (over 4 MiB in one write) is the caller's to frame */

enum fcgi_answer_outcome {
    FCGI_ANSWER_FAILED = -1,   /* sendmsg failed: errno says why (EPIPE, ECONNRESET ...) */
    FCGI_ANSWER_TOO_BIG = -2   /* over FCGI_ANSWER_MAX_RECORDS records: nothing was sent */
};

/* Sends head then body as records of record_type (none when both are empty) for request_id, then
   END_REQUEST (application status 0, REQUEST_COMPLETE) if end. Does not wait (MSG_DONTWAIT) and
   raises no SIGPIPE. Returns the bytes of the records the socket did not take (0: all sent), or
   an outcome above. */
long fcgi_answer_send(int fd, unsigned request_id, int record_type, const unsigned char *head, size_t head_len,
                      const unsigned char *body, size_t body_len, int end);

#endif
