/* libFuzzer harness: the connector's wire code without Apache (fcgi_wire.c).
 *
 * Input: byte 0 picks raw (X_STDIN) or record framing; then a script of operations, each byte
 * either "flush" or the length of a piece of the input to add. What reaches the send function
 * must be exactly the pieces, in order: as they are, or as well-formed STDIN records of at most
 * 64 KiB, each padded to a multiple of 8. The rest of the input also goes through the status,
 * header and Content-Length checks, which must not read past a terminator.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fcgi_wire.h"

#define MAX_OUT (4 * 1024 * 1024)

static unsigned char *sent;
static size_t sent_len;

static int capture(void *ctx, struct iovec *iov, int count)
{
    assert(count > 0 && count <= FCGI_BATCH_IOV);
    for (int i = 0; i < count; i++) {
        assert(sent_len + iov[i].iov_len <= MAX_OUT);
        memcpy(sent + sent_len, iov[i].iov_base, iov[i].iov_len);
        sent_len += iov[i].iov_len;
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sent = malloc(MAX_OUT);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int raw = data[0] & 1;
    fcgi_batch q;
    fcgi_batch_init(&q, raw, 1, capture, NULL);
    sent_len = 0;

    /* The pieces are copies in one arena: they stay valid until the batch is flushed. */
    static unsigned char arena[MAX_OUT / 2];
    size_t arena_len = 0;
    const uint8_t *script = data + 1;
    size_t script_len = (size - 1) / 2, payload_len = size - 1 - script_len;
    const uint8_t *payload = script + script_len;
    size_t taken = 0;
    static unsigned char expected[MAX_OUT / 2];
    size_t expected_len = 0;
    for (size_t i = 0; i < script_len; i++) {
        if (script[i] == 0xFF) {
            assert(fcgi_batch_flush(&q) == 0);
            arena_len = 0;
            continue;
        }
        /* mostly small pieces (the case that once overflowed), sometimes one past 64 KiB */
        size_t n = script[i] == 0xFE ? 70000 : script[i] % 24;
        if (arena_len + n > sizeof arena || expected_len + n > sizeof expected)
            break;
        for (size_t k = 0; k < n; k++)
            arena[arena_len + k] = payload_len ? payload[(taken + k) % payload_len] : (unsigned char)k;
        memcpy(expected + expected_len, arena + arena_len, n);
        assert(fcgi_batch_add(&q, (const char *)arena + arena_len, n) == 0);
        arena_len += n;
        expected_len += n;
        taken += n;
        assert(q.count <= FCGI_BATCH_IOV && q.records <= FCGI_BATCH_RECORDS);
    }
    assert(fcgi_batch_flush(&q) == 0);

    if (raw) {
        assert(sent_len == expected_len && memcmp(sent, expected, expected_len) == 0);
    } else {
        size_t pos = 0, got = 0;
        while (pos < sent_len) {
            assert(sent_len - pos >= 8);
            const unsigned char *h = sent + pos;
            size_t clen = (size_t)h[4] << 8 | h[5];
            assert(h[0] == FCGI_VERSION_1 && h[1] == FCGI_STDIN && h[2] == 0 && h[3] == 1);
            assert(clen > 0 && (clen + h[6]) % 8 == 0 && h[6] < 8);
            assert(sent_len - pos >= 8 + clen + h[6]);
            assert(memcmp(h + 8, expected + got, clen) == 0);
            got += clen;
            pos += 8 + clen + h[6];
        }
        assert(got == expected_len);
    }

    /* the header checks, on the payload as a NUL-terminated string */
    char *text = malloc(payload_len + 1);
    memcpy(text, payload, payload_len);
    text[payload_len] = '\0';
    int status = fcgi_parse_status(text);
    assert(status == -1 || (status >= 200 && status <= 599));
    fcgi_header_name_ok(text);
    fcgi_header_value_ok(text);
    fcgi_hop_by_hop(text, text);
    fcgi_hop_by_hop("Connection", text);
    /* a length is the text's own digits, or -1 for anything else */
    long long length = fcgi_parse_length(text);
    if (length >= 0) {
        char again[32];
        snprintf(again, sizeof again, "%lld", length);
        size_t n = strlen(text), zeros = strspn(text, "0");
        assert(length <= FCGI_MAX_LENGTH && n > 0 && strspn(text, "0123456789") == n);
        assert(strcmp(text + (zeros == n ? n - 1 : zeros), again) == 0);
    }
    free(text);
    return 0;
}
