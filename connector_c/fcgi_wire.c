/* The connector's pure FastCGI wire work: see fcgi_wire.h. */
#include "fcgi_wire.h"

#include <string.h>
#include <strings.h>

void fcgi_fill_header_unpadded(unsigned char h[8], int type, unsigned request_id, size_t len)
{
    h[0] = FCGI_VERSION_1;
    h[1] = (unsigned char)type;
    h[2] = (unsigned char)(request_id >> 8);
    h[3] = (unsigned char)request_id;
    h[4] = (unsigned char)(len >> 8);
    h[5] = (unsigned char)len;
    h[6] = 0;
    h[7] = 0;
}

void fcgi_fill_header(unsigned char h[8], int type, unsigned request_id, size_t len)
{
    fcgi_fill_header_unpadded(h, type, request_id, len);
    h[6] = (unsigned char)((8 - len % 8) % 8); /* pad to a multiple of 8 */
}

void fcgi_batch_init(fcgi_batch *q, int raw, unsigned request_id, fcgi_send_fn send, void *ctx)
{
    q->send = send;
    q->ctx = ctx;
    q->raw = raw;
    q->request_id = request_id;
    q->count = q->records = 0;
}

int fcgi_batch_flush(fcgi_batch *q)
{
    int rv = q->count ? q->send(q->ctx, q->iov, q->count) : 0;
    q->count = q->records = 0;
    return rv;
}

int fcgi_batch_add(fcgi_batch *q, const char *data, size_t len)
{
    static const char padding[8];
    while (len) {
        /* Room for one more record's iovecs and its header, whatever its padding. */
        if (q->count + 3 > FCGI_BATCH_IOV || q->records == FCGI_BATCH_RECORDS) {
            int rv = fcgi_batch_flush(q);
            if (rv)
                return rv;
        }
        if (q->raw) {
            q->iov[q->count++] = (struct iovec){(void *)data, len};
            return 0;
        }
        size_t n = len > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : len;
        unsigned char *h = q->headers[q->records++];
        fcgi_fill_header(h, FCGI_STDIN, q->request_id, n);
        q->iov[q->count++] = (struct iovec){h, 8};
        q->iov[q->count++] = (struct iovec){(void *)data, n};
        if (h[6])
            q->iov[q->count++] = (struct iovec){(void *)padding, h[6]};
        data += n;
        len -= n;
    }
    return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int fcgi_parse_status(const char *value)
{
    if (!is_digit(value[0]) || !is_digit(value[1]) || !is_digit(value[2]))
        return -1;
    int status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    if (status < 200 || status > 599)
        return -1;
    const char *reason = value + 3;
    if (*reason == '\0')
        return status;
    if (*reason != ' ')
        return -1;
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)reason + 1; *s; s++, n++) {
        if (n >= FCGI_MAX_REASON || (*s < 0x20 && *s != '\t') || *s == 0x7f)
            return -1;
    }
    return status;
}

long long fcgi_parse_length(const char *value)
{
    if (!*value)
        return -1;
    long long length = 0;
    for (const char *s = value; *s; s++) {
        if (!is_digit(*s) || length > (FCGI_MAX_LENGTH - (*s - '0')) / 10)
            return -1;
        length = length * 10 + (*s - '0');
    }
    return length;
}

int fcgi_hop_by_hop(const char *name, const char *value)
{
    static const char *const names[] = {"keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcasecmp(name, names[i]))
            return 1;
    if (strcasecmp(name, "connection"))
        return 0;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    return !(n == 5 && !strncasecmp(value, "close", 5));
}

int fcgi_header_name_ok(const char *name)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (!*name)
        return 0;
    for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
        int alnum = (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z');
        if (!alnum && !memchr(tchar, *s, sizeof tchar - 1))
            return 0;
    }
    return 1;
}

int fcgi_header_value_ok(const char *value)
{
    for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
        if ((*s < 0x20 && *s != '\t') || *s == 0x7f)
            return 0;
    }
    return 1;
}
