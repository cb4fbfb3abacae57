/* See fcgi_answer.h. */
#define _GNU_SOURCE
#include "fcgi_answer.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "fcgi_wire.h"

#define HEADER_LEN 8

long fcgi_answer_send(int fd, unsigned request_id, int record_type, const unsigned char *head, size_t head_len,
                      const unsigned char *body, size_t body_len, int end)
{
    size_t content = head_len + body_len;
    if ((content + FCGI_ANSWER_RECORD_MAX - 1) / FCGI_ANSWER_RECORD_MAX > FCGI_ANSWER_MAX_RECORDS)
        return FCGI_ANSWER_TOO_BIG;
    unsigned char headers[FCGI_ANSWER_MAX_RECORDS + 1][HEADER_LEN];
    static const unsigned char end_body[HEADER_LEN];  /* application status 0, REQUEST_COMPLETE, reserved */
    struct iovec iov[FCGI_ANSWER_MAX_RECORDS * 3 + 2];  /* a record: its header and up to two pieces */
    size_t n = 0, records = 0, total = 0;
    for (size_t done = 0; done < content;) {
        size_t len = content - done < FCGI_ANSWER_RECORD_MAX ? content - done : FCGI_ANSWER_RECORD_MAX;
        fcgi_fill_header_unpadded(headers[records], record_type, request_id, len);
        iov[n++] = (struct iovec){headers[records++], HEADER_LEN};
        if (done < head_len) {  /* [done, done + len) starts in head */
            size_t take = head_len - done < len ? head_len - done : len;
            iov[n++] = (struct iovec){(void *)(head + done), take};
        }
        if (done + len > head_len) {  /* ... and ends in body */
            size_t from = done > head_len ? done - head_len : 0;
            iov[n++] = (struct iovec){(void *)(body + from), done + len - head_len - from};
        }
        done += len;
    }
    if (end) {
        fcgi_fill_header_unpadded(headers[records], FCGI_END_REQUEST, request_id, HEADER_LEN);
        iov[n++] = (struct iovec){headers[records], HEADER_LEN};
        iov[n++] = (struct iovec){(void *)end_body, HEADER_LEN};
    }
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        total += iov[i].iov_len;
    struct msghdr message = {.msg_iov = iov, .msg_iovlen = n};
    ssize_t sent;
    do
        sent = sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? (long)total : FCGI_ANSWER_FAILED;
    return (long)(total - (size_t)sent);
}
