/* See fcgi_request.h. */
#include "fcgi_request.h"

#include <string.h>

#define HEADER_LEN 8
#define VERSION_1 1
#define BEGIN_REQUEST 1
#define PARAMS 4
#define STDIN 5
#define RESPONDER 1

/* A name-value length: one byte below 128, else four bytes with the top bit set. Returns the
   bytes it took, or 0 when the content ends inside it. */
static size_t pair_length(const unsigned char *p, size_t left, size_t *value)
{
    if (left < 1)
        return 0;
    if (p[0] < 128) {
        *value = p[0];
        return 1;
    }
    if (left < 4)
        return 0;
    *value = ((size_t)(p[0] & 0x7f) << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
    return 4;
}

/* The params content (whole, gathered in in, which lies past out[0 .. len)) into out: first every
   name, then every value, each NUL-terminated, in the order sent; *names_len is the names' part.
   Returns the bytes written, or (size_t)-1 for a malformed pair or a NUL inside a name or value.
   The values are first moved down within in itself (a pair takes at least two length bytes, so
   that writing never overtakes the reading), then after the names. */
static size_t decode_params(unsigned char *in, size_t len, unsigned char *out, size_t *names_len)
{
    size_t pos = 0, names = 0, values = 0;
    while (pos < len) {
        size_t name_len, value_len, took;
        if (!(took = pair_length(in + pos, len - pos, &name_len)))
            return (size_t)-1;
        pos += took;
        if (!(took = pair_length(in + pos, len - pos, &value_len)))
            return (size_t)-1;
        pos += took;
        if (name_len > len - pos || value_len > len - pos - name_len)
            return (size_t)-1;
        if (memchr(in + pos, 0, name_len + value_len))
            return (size_t)-1;
        memcpy(out + names, in + pos, name_len);
        names += name_len;
        out[names++] = 0;
        memmove(in + values, in + pos + name_len, value_len);
        values += value_len;
        in[values++] = 0;
        pos += name_len + value_len;
    }
    memcpy(out + names, in, values);
    *names_len = names;
    return names + values;
}

int fcgi_scan_request(const unsigned char *buf, size_t len, size_t max_params, size_t max_body,
                      unsigned char *out, size_t out_cap, fcgi_scanned_request *scanned)
{
    size_t pos = 0, params_len = 0, names_len = 0, body_len = 0;
    int stage = BEGIN_REQUEST;  /* the record type expected next (PARAMS, then STDIN) */
    unsigned request_id = 0;

    scanned->params_whole = 0;
    if (max_params > out_cap / 2)  /* (not 2 * max_params: it could wrap) */
        return FCGI_SCAN_OTHER;
    /* the params as sent, decoded once whole into out's start, which they do not reach */
    unsigned char *gathered = out + out_cap - max_params;
    while (pos < len) {
        if (len - pos < HEADER_LEN)
            return FCGI_SCAN_PART;
        const unsigned char *h = buf + pos;
        unsigned type = h[1], id = ((unsigned)h[2] << 8) | h[3];
        size_t content = ((size_t)h[4] << 8) | h[5], padding = h[6];
        if (h[0] != VERSION_1)
            return FCGI_SCAN_OTHER;
        if (stage == BEGIN_REQUEST) {
            if (type != BEGIN_REQUEST || id == 0 || content != 8)
                return FCGI_SCAN_OTHER;
            request_id = id;
        } else if (type != (unsigned)stage || id != request_id) {
            return FCGI_SCAN_OTHER;
        }
        if (len - pos - HEADER_LEN < content + padding)
            return FCGI_SCAN_PART;
        const unsigned char *c = h + HEADER_LEN;
        pos += HEADER_LEN + content + padding;

        if (stage == BEGIN_REQUEST) {
            if ((((unsigned)c[0] << 8) | c[1]) != RESPONDER)
                return FCGI_SCAN_OTHER;
            scanned->flags = c[2];
            stage = PARAMS;
        } else if (stage == PARAMS && content) {
            if (params_len + content > max_params)
                return FCGI_SCAN_OTHER;
            memcpy(gathered + params_len, c, content);
            params_len += content;
        } else if (stage == PARAMS) {
            size_t decoded = decode_params(gathered, params_len, out, &names_len);
            if (decoded == (size_t)-1)
                return FCGI_SCAN_OTHER;
            params_len = decoded;
            stage = STDIN;
            scanned->params_whole = 1;
        } else if (content) {
            if (body_len + content > max_body || params_len + body_len + content > out_cap)
                return FCGI_SCAN_OTHER;
            memcpy(out + params_len + body_len, c, content);
            body_len += content;
        } else {
            scanned->request_id = request_id;
            scanned->consumed = pos;
            scanned->params_len = params_len;
            scanned->names_len = names_len;
            scanned->body_len = body_len;
            return FCGI_SCAN_WHOLE;
        }
    }
    return FCGI_SCAN_PART;
}
