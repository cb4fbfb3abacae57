/* A multipart upload in progress: the parser of multipart.h with its I/O edge.
 *
 * File parts stream to temporary files (mkstemp in the upload directory, written with write(2)
 * through a buffer; a large file's disk blocks are reserved ahead of the writes with fallocate,
 * and what its part did not fill is given back when it ends; past limits.direct_after bytes a
 * thread writes the rest with O_DIRECT while the body is still read); other parts stay in memory. Every
 * limit is checked as bytes arrive, and any error removes every file this upload created. Input
 * comes from memory (upload_feed) or straight from a file descriptor (upload_read_fd, for the
 * FCGI_X_STDIN raw stream).
 */
#ifndef FCGI_BACKEND_UPLOAD_H
#define FCGI_BACKEND_UPLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Temporary files are named UPLOAD_FILE_PREFIX "<pid>-XXXXXX" in the upload directory. */
#define UPLOAD_FILE_PREFIX "fcgi-upload-"

typedef struct upload_limits {
    uint64_t max_body;          /* bytes of the whole body */
    uint64_t max_file;          /* bytes of one file part */
    uint64_t max_field_memory;  /* bytes of all non-file parts together */
    uint32_t max_parts;
    uint32_t max_header;        /* header bytes of one part */
    int read_timeout_ms;        /* upload_read_fd: longest wait for the next bytes; <= 0 waits forever */
    uint64_t direct_after;      /* a file part past this many bytes goes on past the page cache
                                   (direct_writer.h); 0: never */
} upload_limits;

typedef struct upload_part {
    char *name;                 /* a file part's name (a field's is in the field memory) */
    char *filename;             /* NULL for a field */
    char *filename_star;        /* RFC 5987 value, undecoded, or NULL */
    char *content_type;         /* NULL if not sent */
    char *path;                 /* temporary file of a file part, else NULL */
    uint64_t size;
    uint64_t name_offset;       /* a field's name, also kept in the field memory */
    uint64_t value_offset;      /* a field's value: upload_field_memory() + value_offset */
    int is_file;
} upload_part;

enum upload_status {
    UPLOAD_MORE = 0,            /* fine so far; more input expected */
    UPLOAD_DONE = 1,            /* closing boundary read */
    UPLOAD_ERROR = -1           /* see upload_error_status / upload_error_message */
};

typedef struct upload upload;

/* NULL only when out of memory. A bad boundary shows as an error on the returned upload.
   A NULL directory parses without storing: file parts are counted, their bytes dropped. */
upload *upload_new(const char *boundary, size_t boundary_len, const char *directory,
                   const upload_limits *limits);
int upload_feed(upload *u, const char *data, size_t len);
/* Read exactly n bytes from fd and parse them. The GIL is released around this call. Each wait
   for more bytes lasts at most the limits' read_timeout_ms: a socket is read without blocking
   (MSG_DONTWAIT) and polled, whatever its mode. With seconds_per_byte > 0 (1 / min_rate), the
   waits together also last at most allowance seconds plus seconds_per_byte for each byte read,
   with at most read_timeout saved up (fcgi_backend/pace.py). A body rejected (a limit, malformed)
   is left unread from there (upload_fd_unread says how much): the caller answers, then drops a
   little of the rest or closes the connection. */
int upload_read_fd(upload *u, int fd, uint64_t n, double allowance, double seconds_per_byte);
/* Of the last upload_read_fd's n bytes, how many it left on the fd (it stopped at an error). */
uint64_t upload_fd_unread(const upload *u);
/* recv(MSG_DONTWAIT) on a socket, read() on anything else. */
ssize_t read_nowait(int fd, void *buf, size_t len);
/* The input broke off (the peer went away): an error with status 0, files removed. */
void upload_fail_input(upload *u, const char *message);
/* The input has ended: UPLOAD_DONE, or UPLOAD_ERROR if the body was incomplete. */
int upload_finish(upload *u);

/* UPLOAD_MORE, UPLOAD_DONE or UPLOAD_ERROR. */
int upload_status(const upload *u);
/* HTTP status that fits the error: 400 malformed, 413 over a limit, 500 server-side failure,
   0 when the peer went away (no response can be sent). */
int upload_error_status(const upload *u);
const char *upload_error_message(const upload *u);
uint64_t upload_bytes_in(const upload *u);

size_t upload_part_count(const upload *u);
size_t upload_file_count(const upload *u);
const upload_part *upload_get_part(const upload *u, size_t i);
/* Field parts, in order, as name NUL value NUL. */
const char *upload_field_memory(const upload *u);
uint64_t upload_field_memory_size(const upload *u);
/* True if some value contains a NUL byte, so the memory cannot simply be split at NULs. */
int upload_fields_have_nul(const upload *u);
/* All parts at once, 5 numbers each: is_file, name offset, name length, value offset, value
   length (offsets into the field memory; for a file part only is_file is set). */
void upload_index(const upload *u, uint64_t *out);

/* Remove every temporary file still listed (after an error, or files nobody kept). */
void upload_remove_files(upload *u);
/* Forget a file without removing it: its owner has taken it over. */
void upload_release_file(upload *u, size_t i);
/* Free everything; files still listed are removed. */
void upload_free(upload *u);

/* The boundary parameter of a Content-Type, as in multipart.h (exposed for the Python side). */
int upload_boundary_from_content_type(const char *content_type, size_t len, char *out);

#endif
