/* libFuzzer harness: the pure multipart parser (multipart.c).
 *
 * Input: byte 0 picks a boundary, byte 1 a chunk size; the rest is the body, fed in chunks. Checks
 * what the parser promises: it never reads or points outside what it was given, consumes input
 * whenever it returns MP_NEED_MORE, and an error is final.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "../multipart.h"

static const char *const boundaries[] = {"XyZ", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a",
                                         "b:c d'()+_,-./=?", "--"};

static mp_parser parser;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *boundary = boundaries[data[0] % (sizeof boundaries / sizeof *boundaries)];
    size_t chunk = (size_t)data[1] + 1;
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    assert(mp_init(&parser, boundary, strlen(boundary), 256) == MP_OK);

    int failed = 0;
    for (size_t at = 0; at < len;) {
        size_t n = len - at < chunk ? len - at : chunk;
        const char *buf = body + at;
        size_t off = 0;
        while (off < n) {
            size_t used = 0;
            enum mp_event ev = mp_next(&parser, buf + off, n - off, &used);
            assert(used <= n - off);
            if (ev == MP_PART_DATA) {
                /* data points into this chunk, or into the delimiter bytes held from the last one */
                const char *d = parser.data;
                int in_chunk = d >= buf && d + parser.data_len <= buf + n;
                int in_delim = d >= parser.delim && d + parser.data_len <= parser.delim + sizeof parser.delim;
                assert(in_chunk || in_delim);
                assert(parser.data_len > 0);
            }
            if (ev == MP_PART_BEGIN)
                assert(parser.name != NULL && strlen(parser.name) <= parser.header_len);
            if (ev == MP_ERROR) {
                failed = 1;
                break;
            }
            if (ev == MP_NEED_MORE)
                assert(used == n - off);
            off += used;
            if (ev == MP_DONE)
                break;
        }
        if (failed)
            break;
        at += n;
    }
    enum mp_event end = mp_finish(&parser);
    if (failed)
        assert(end == MP_ERROR);
    return 0;
}
