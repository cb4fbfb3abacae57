/* The connector's FastCGI wire work that needs no Apache: record headers, body bytes gathered into
 * iovecs for one sendmsg (raw for FCGI_X_STDIN, or framed as FCGI_STDIN records), and the checks a
 * response's CGI header block must pass before Apache relays it. Pure: the caller supplies the
 * send function, so a fuzzer can drive all of it (connector_c/fuzz/).
 */
#ifndef FCGI_BACKEND_FCGI_WIRE_H
#define FCGI_BACKEND_FCGI_WIRE_H

#include <stddef.h>
#include <sys/uio.h>

#define FCGI_VERSION_1 1
#define FCGI_BEGIN_REQUEST 1
#define FCGI_END_REQUEST 3
#define FCGI_PARAMS 4
#define FCGI_STDIN 5
#define FCGI_STDOUT 6
#define FCGI_STDERR 7
#define FCGI_X_STDIN 50
#define FCGI_RESPONDER 1
#define FCGI_MAX_CONTENT 65535

/* A record header for `len` content bytes, padded to a multiple of 8. */
void fcgi_fill_header(unsigned char h[8], int type, unsigned request_id, size_t len);

/* The same without padding (a sender whose records hold a multiple of 8, or who pads nothing). */
void fcgi_fill_header_unpadded(unsigned char h[8], int type, unsigned request_id, size_t len);

/* Sends every byte of iov[0..count); returns 0, or a nonzero status that fcgi_batch passes on. */
typedef int (*fcgi_send_fn)(void *ctx, struct iovec *iov, int count);

#define FCGI_BATCH_IOV 96
/* A record takes at most 3 iovecs (header, content, padding) and at least 2: that many headers. */
#define FCGI_BATCH_RECORDS (FCGI_BATCH_IOV / 2)

typedef struct fcgi_batch {
    fcgi_send_fn send;
    void *ctx;
    int raw;                   /* 1: bytes as they are (the X_STDIN stream); 0: STDIN records */
    unsigned request_id;
    struct iovec iov[FCGI_BATCH_IOV];
    unsigned char headers[FCGI_BATCH_RECORDS][8];
    int count, records;
} fcgi_batch;

void fcgi_batch_init(fcgi_batch *q, int raw, unsigned request_id, fcgi_send_fn send, void *ctx);
/* Queue `len` bytes that stay valid until the next fcgi_batch_flush; sends when the batch is full. */
int fcgi_batch_add(fcgi_batch *q, const char *data, size_t len);
int fcgi_batch_flush(fcgi_batch *q);

/* A CGI "Status:" value: three digits from 200 to 599 (a final response: 1xx cannot carry a body
   through a CGI gateway), then nothing or a space and a reason of at most FCGI_MAX_REASON visible
   characters, spaces and tabs. Returns the status, or -1. */
#define FCGI_MAX_REASON 256
int fcgi_parse_status(const char *value);

/* A response's Content-Length: 1*DIGIT (RFC 9110) up to FCGI_MAX_LENGTH; else -1 (a sign, a
   space, a list, a number too big: the connector drops such a header and frames the answer itself). */
#define FCGI_MAX_LENGTH (1LL << 62)
long long fcgi_parse_length(const char *value);

/* A hop-by-hop response header (RFC 9110 7.6.1: Connection but "close", Keep-Alive,
   Proxy-Connection, TE, Transfer-Encoding, Upgrade): Apache's to send, never a backend's. A
   Transfer-Encoding passed on would have Apache send the body unframed under it. 1 or 0. */
int fcgi_hop_by_hop(const char *name, const char *value);

/* A response header name is an RFC 9110 token; a value holds no control character but HTAB. */
int fcgi_header_name_ok(const char *name);
int fcgi_header_value_ok(const char *value);

#endif
