/* libFuzzer harness: FCGI_STDIN records read from a socket into an upload (fcgi_stdin.c).
 *
 * Input: byte 0 splits the rest between bytes already buffered and bytes still on the socket;
 * the socket's peer then hangs up. The outcome and the bytes left for the record parser must be
 * what a plain walk over the records says (feeding a second upload, the reader stops after the
 * record it refuses), and the reader must stay inside its buffer.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../fcgi_stdin.h"

#define CAP (128 * 1024)
#define MAX_INPUT (96 * 1024) /* fits in a socketpair's buffer, so one write never blocks */

static char buffer[CAP];

/* The outcome a correct reader gives for this stream, and where its leftover bytes start; ref, an
   upload like the reader's, takes each record's content in turn (the reader stops after the
   record it refuses). */
static int expected_outcome(const unsigned char *s, size_t total, size_t *rest_at, upload *ref)
{
    size_t pos = 0;
    for (;;) {
        if (total - pos < 8)
            return FCGI_STDIN_FAILED; /* the peer hung up inside a record header */
        const unsigned char *h = s + pos;
        if (h[0] != 1 || h[1] != 5 || (h[2] << 8 | h[3]) != 1) {
            *rest_at = pos;
            return FCGI_STDIN_OTHER;
        }
        size_t record = 8 + (size_t)(h[4] << 8 | h[5]) + h[6];
        if (total - pos < record)
            return FCGI_STDIN_FAILED;
        pos += record;
        if ((h[4] << 8 | h[5]) == 0) {
            *rest_at = pos;
            return FCGI_STDIN_ENDED;
        }
        if (upload_feed(ref, (const char *)h + 8, (size_t)(h[4] << 8 | h[5])) == UPLOAD_ERROR) {
            *rest_at = pos;
            return FCGI_STDIN_REJECTED;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > MAX_INPUT)
        return 0;
    size_t buffered = (size - 1) * data[0] / 255;
    const char *bytes = (const char *)data + 1;
    size_t total = size - 1;

    int fds[2];
    assert(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    int sndbuf = 256 * 1024;
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (total > buffered)
        assert(write(fds[1], bytes + buffered, total - buffered) == (ssize_t)(total - buffered));
    close(fds[1]);

    upload_limits limits = {.max_body = 1 << 20, .max_file = 1 << 20, .max_field_memory = 4096,
                            .max_parts = 16, .max_header = 512, .read_timeout_ms = 1000};
    upload *u = upload_new("XyZ", 3, NULL, &limits); /* parse only: file parts are counted */
    memcpy(buffer, bytes, buffered);
    size_t rest_start = 0, rest_len = 0;
    int outcome = fcgi_stdin_feed(u, fds[0], 1, buffer, CAP, buffered, 1000, &rest_start, &rest_len);
    size_t rest_at = 0;
    upload *ref = upload_new("XyZ", 3, NULL, &limits);
    assert(outcome == expected_outcome((const unsigned char *)bytes, total, &rest_at, ref));
    if (outcome == FCGI_STDIN_REJECTED)
        assert(upload_status(u) == UPLOAD_ERROR && upload_error_status(u) == upload_error_status(ref));
    upload_free(ref);
    assert(rest_start + rest_len <= CAP);
    if (outcome == FCGI_STDIN_FAILED) {
        assert(upload_status(u) == UPLOAD_ERROR);
    } else {
        assert(rest_len <= total - rest_at);
        assert(memcmp(buffer + rest_start, bytes + rest_at, rest_len) == 0);
    }
    upload_free(u);
    close(fds[0]);
    return 0;
}
