/* libFuzzer harness: the whole-request scanner (fcgi_request.c).
 *
 * Input: two bytes choose max_params and max_body (small, so the bounds are reached), the rest is
 * what a web server sent. Whatever the bytes, the scanner writes only inside out and says:
 *   WHOLE: it took at most the input, params and body fit out, the params are as many
 *          NUL-terminated names as NUL-terminated values after them, every strict prefix of what
 *          it took is PART (the start of a request), and the bytes after it change nothing.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../fcgi_request.h"

#define GUARD 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_params = 8 + data[0] * 8, max_body = data[1] * 16;
    data += 2;
    size -= 2;
    size_t cap = 2 * max_params + max_body;
    unsigned char *out = malloc(cap + GUARD);
    memset(out + cap, 0xA5, GUARD);
    fcgi_scanned_request scanned;
    int outcome = fcgi_scan_request(data, size, max_params, max_body, out, cap, &scanned);
    for (size_t i = 0; i < GUARD; i++)
        assert(out[cap + i] == 0xA5);
    assert(outcome == FCGI_SCAN_WHOLE || outcome == FCGI_SCAN_PART || outcome == FCGI_SCAN_OTHER);
    if (outcome == FCGI_SCAN_WHOLE) {
        assert(scanned.consumed >= 32 && scanned.consumed <= size);
        assert(scanned.request_id != 0 && scanned.params_whole);
        assert(scanned.params_len + scanned.body_len <= cap && scanned.body_len <= max_body);
        assert(scanned.names_len <= scanned.params_len);
        size_t names = 0, values = 0;
        for (size_t i = 0; i < scanned.params_len; i++)
            *(i < scanned.names_len ? &names : &values) += out[i] == 0;
        assert(names == values);
        assert(scanned.names_len == 0 || out[scanned.names_len - 1] == 0);
        assert(scanned.params_len == 0 || out[scanned.params_len - 1] == 0);
        /* Every strict prefix of the request is the start of one: PART. */
        fcgi_scanned_request again;
        size_t cuts[] = {0, 1, 7, 8, scanned.consumed / 2, scanned.consumed - 8, scanned.consumed - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
            assert(fcgi_scan_request(data, cuts[i], max_params, max_body, out, cap, &again) == FCGI_SCAN_PART);
        /* What follows the request does not change what it is. */
        assert(fcgi_scan_request(data, scanned.consumed, max_params, max_body, out, cap, &again) == FCGI_SCAN_WHOLE);
        assert(again.consumed == scanned.consumed && again.params_len == scanned.params_len &&
               again.names_len == scanned.names_len && again.body_len == scanned.body_len);
    }
    free(out);
    return 0;
}
