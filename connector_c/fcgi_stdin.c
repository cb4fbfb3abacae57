/* FCGI_STDIN records straight into an upload: see fcgi_stdin.h. */
#include "fcgi_stdin.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#define FCGI_VERSION_1 1
#define FCGI_STDIN 5
#define HEADER_LEN 8

int fcgi_stdin_feed(upload *u, int fd, unsigned request_id, char *buf, size_t cap, size_t buffered_len,
                    int timeout_ms, size_t *rest_start, size_t *rest_len)
{
    size_t pos = 0, end = buffered_len;
    for (;;) {
        /* Every complete record in buf[pos..end). */
        while (end - pos >= HEADER_LEN) {
            const unsigned char *h = (const unsigned char *)buf + pos;
            unsigned type = h[1], id = (unsigned)h[2] << 8 | h[3];
            size_t content = (size_t)h[4] << 8 | h[5], padding = h[6];
            if (h[0] != FCGI_VERSION_1 || type != FCGI_STDIN || id != request_id)
                goto other;
            if (end - pos < HEADER_LEN + content + padding)
                break; /* the rest of this record is still on the socket */
            if (content == 0) {
                pos += HEADER_LEN + padding;
                *rest_start = pos;
                *rest_len = end - pos;
                return FCGI_STDIN_ENDED;
            }
            upload_feed(u, buf + pos + HEADER_LEN, content);
            pos += HEADER_LEN + content + padding;
            if (upload_status(u) == UPLOAD_ERROR) { /* rejected: the rest is not read on */
                *rest_start = pos;
                *rest_len = end - pos;
                return FCGI_STDIN_REJECTED;
            }
        }
        /* Keep the unfinished record, then read more behind it. */
        if (pos) {
            memmove(buf, buf + pos, end - pos);
            end -= pos;
            pos = 0;
        }
        ssize_t n = read_nowait(fd, buf + end, cap - end);
        if (n > 0) {
            end += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        const char *failure = n == 0 ? "the web server closed the connection in the middle of the body"
                                     : "reading the body from the web server failed";
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int ready = poll(&pfd, 1, timeout_ms > 0 ? timeout_ms : -1);
            if (ready != 0)
                continue;
            failure = "timed out waiting for the rest of the body from the web server";
        }
        upload_fail_input(u, failure);
        *rest_start = pos;
        *rest_len = end - pos;
        return FCGI_STDIN_FAILED;
    }
other:
    *rest_start = pos;
    *rest_len = end - pos;
    return FCGI_STDIN_OTHER;
}
