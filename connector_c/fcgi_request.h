/* The usual FastCGI request, found whole in a receive buffer and taken in one call.
 *
 * What web servers send for most requests arrives in one read: BEGIN_REQUEST (responder role),
 * the request's PARAMS records up to the empty one, its STDIN records up to the empty one. This
 * scanner recognises exactly that shape at the start of a buffer and hands back the params as
 * "name\0name\0...value\0value\0..." (the names apart: a web server sends the same names request
 * after request, and Python keeps the last ones split) followed by the body. Anything else --
 * another record type or request id, a bad header, a NUL inside a name or value, params or a body
 * over their bounds, a malformed length -- is left alone for the record-by-record path, which is
 * the reference and judges it. Pure: bytes in, bytes out, no allocation.
 */
#ifndef FCGI_BACKEND_FCGI_REQUEST_H
#define FCGI_BACKEND_FCGI_REQUEST_H

#include <stddef.h>

enum fcgi_scan_outcome {
    FCGI_SCAN_WHOLE = 1,   /* buf starts with a whole request of the usual shape */
    FCGI_SCAN_PART = 0,    /* buf is the start of one: more bytes may complete it */
    FCGI_SCAN_OTHER = -1   /* anything else: leave it to the record-by-record path */
};

typedef struct fcgi_scanned_request {
    unsigned request_id;
    unsigned flags;        /* of BEGIN_REQUEST: FCGI_KEEP_CONN */
    size_t consumed;       /* bytes of buf the request's records take */
    size_t params_len;     /* out[0 .. params_len): each name NUL, then each value NUL, in order */
    size_t names_len;      /* out[0 .. names_len): the names */
    size_t body_len;       /* out[params_len .. params_len + body_len): the STDIN content */
    int params_whole;      /* whatever the outcome: the empty PARAMS record was reached */
} fcgi_scanned_request;

/* max_params bounds the PARAMS content, max_body the STDIN content; out (capacity out_cap, at
   least 2 * max_params: the params are gathered at its end and decoded into its start) takes the
   decoded params and the body, which must both fit. */
int fcgi_scan_request(const unsigned char *buf, size_t len, size_t max_params, size_t max_body,
                      unsigned char *out, size_t out_cap, fcgi_scanned_request *scanned);

#endif
