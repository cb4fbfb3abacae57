/* Incremental multipart/form-data parser (RFC 7578, RFC 2046): bytes in, events out.
 *
 * No I/O and no allocation: the caller owns the parser struct and feeds it whatever bytes it has;
 * each call returns one event. Part data is handed out as pointers into the caller's buffer.
 *
 *     mp_parser p;
 *     mp_init(&p, boundary, boundary_len, 16384);
 *     while (have input) {
 *         size_t used;
 *         switch (mp_next(&p, buf, len, &used)) { ... }
 *         buf += used; len -= used;
 *     }
 *     mp_finish(&p);   // input ended: MP_DONE, or MP_ERROR if the closing boundary never came
 */
#ifndef FCGI_BACKEND_MULTIPART_H
#define FCGI_BACKEND_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define MP_MAX_BOUNDARY 70        /* RFC 2046: 1 to 70 characters */
#define MP_MAX_HEADER_CAP 65536   /* upper bound for the per-part header limit */

enum mp_event {
    MP_NEED_MORE = 0,  /* all input consumed; feed more */
    MP_PART_BEGIN,     /* a part's headers are parsed: see name, filename, content_type */
    MP_PART_DATA,      /* data of the current part: data, data_len */
    MP_PART_END,       /* the current part is complete */
    MP_DONE,           /* the closing boundary was read; the rest is epilogue */
    MP_ERROR           /* see error and error_message; the parser stays in error */
};

enum mp_error {
    MP_OK = 0,
    MP_E_BOUNDARY,          /* boundary missing, too long or with forbidden characters */
    MP_E_HEADER_TOO_LARGE,  /* a part's header block exceeds max_header */
    MP_E_BAD_HEADER,        /* a header line without ':', without a form-data name, ending in a bare
                               LF, or holding a NUL byte */
    MP_E_BAD_DELIMITER,     /* something other than CRLF or "--" after a boundary */
    MP_E_PREAMBLE,          /* the body does not start with its boundary (no preamble accepted) */
    MP_E_TRUNCATED          /* input ended before the closing boundary */
};

typedef struct mp_parser {
    int state;
    int error;
    const char *error_message;
    uint64_t offset;                   /* bytes consumed so far, for messages */

    char delim[MP_MAX_BOUNDARY + 4];   /* "\r\n--" + boundary */
    size_t delim_len;
    size_t matched;                    /* delimiter bytes matched at the end of earlier input */

    /* The current part's headers (valid from MP_PART_BEGIN to the next part). Strings are
       NUL-terminated and point into header[]; absent ones are NULL. */
    const char *name;
    const char *filename;          /* filename="..." as sent */
    const char *filename_star;     /* filename*=charset'lang'percent-encoded, undecoded */
    const char *content_type;

    const char *data;              /* MP_PART_DATA */
    size_t data_len;

    size_t header_len;
    size_t max_header;
    char header[MP_MAX_HEADER_CAP + 1];
} mp_parser;

/* Start parsing a body whose boundary is given (without the leading "--"). 0 or MP_E_BOUNDARY. */
int mp_init(mp_parser *p, const char *boundary, size_t boundary_len, size_t max_header);

/* Consume input up to the next event; *consumed tells how many bytes of buf were used. */
enum mp_event mp_next(mp_parser *p, const char *buf, size_t len, size_t *consumed);

/* The input has ended: MP_DONE if the closing boundary was seen, else MP_ERROR (MP_E_TRUNCATED). */
enum mp_event mp_finish(mp_parser *p);

/* Extract the boundary parameter of a Content-Type value (quoted or not) into out[MP_MAX_BOUNDARY+1].
   Returns its length, or -1 if there is none or it is invalid. */
int mp_boundary_from_content_type(const char *content_type, size_t len, char *out);

#endif
