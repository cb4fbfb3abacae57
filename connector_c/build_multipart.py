"""cffi build (API mode) of the C parts as fcgi_backend._multipart: the multipart parser, its upload edge,
the STDIN reader, the whole-request scanner and the answer's sender.

setup.py names this in cffi_modules, so ``pip install .`` compiles it.
"""

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ffibuilder = FFI()
ffibuilder.cdef("""
typedef struct upload_limits {
    uint64_t max_body;
    uint64_t max_file;
    uint64_t max_field_memory;
    uint32_t max_parts;
    uint32_t max_header;
    int read_timeout_ms;
    uint64_t direct_after;
} upload_limits;

typedef struct upload_part {
    char *name;
    char *filename;
    char *filename_star;
    char *content_type;
    char *path;
    uint64_t size;
    uint64_t name_offset;
    uint64_t value_offset;
    int is_file;
} upload_part;

typedef struct upload upload;

upload *upload_new(const char *boundary, size_t boundary_len, const char *directory,
                   const upload_limits *limits);
int upload_feed(upload *u, const char *data, size_t len);
int upload_read_fd(upload *u, int fd, uint64_t n, double allowance, double seconds_per_byte);
uint64_t upload_fd_unread(const upload *u);
int upload_finish(upload *u);
int upload_status(const upload *u);
int upload_error_status(const upload *u);
const char *upload_error_message(const upload *u);
uint64_t upload_bytes_in(const upload *u);
size_t upload_part_count(const upload *u);
size_t upload_file_count(const upload *u);
const upload_part *upload_get_part(const upload *u, size_t i);
const char *upload_field_memory(const upload *u);
uint64_t upload_field_memory_size(const upload *u);
int upload_fields_have_nul(const upload *u);
void upload_index(const upload *u, uint64_t *out);
void upload_remove_files(upload *u);
void upload_release_file(upload *u, size_t i);
void upload_free(upload *u);
int upload_boundary_from_content_type(const char *content_type, size_t len, char *out);
void upload_fail_input(upload *u, const char *message);

enum fcgi_scan_outcome { FCGI_SCAN_WHOLE = 1, FCGI_SCAN_PART = 0, FCGI_SCAN_OTHER = -1 };

typedef struct fcgi_scanned_request {
    unsigned request_id;
    unsigned flags;
    size_t consumed;
    size_t params_len;
    size_t names_len;
    size_t body_len;
    int params_whole;
} fcgi_scanned_request;

int fcgi_scan_request(const unsigned char *buf, size_t len, size_t max_params, size_t max_body,
                      unsigned char *out, size_t out_cap, fcgi_scanned_request *scanned);

enum fcgi_answer_outcome { FCGI_ANSWER_FAILED = -1, FCGI_ANSWER_TOO_BIG = -2 };

long fcgi_answer_send(int fd, unsigned request_id, int record_type, const unsigned char *head, size_t head_len,
                      const unsigned char *body, size_t body_len, int end);

int fcgi_stdin_feed(upload *u, int fd, unsigned request_id, char *buf, size_t cap, size_t buffered_len,
                    int timeout_ms, size_t *rest_start, size_t *rest_len);
""")

ffibuilder.set_source(
    "fcgi_backend._multipart",
    '#include "upload.h"\n#include "fcgi_stdin.h"\n#include "fcgi_request.h"\n#include "fcgi_answer.h"',
    sources=[os.path.relpath(os.path.join(HERE, name), ROOT)
             for name in ("multipart.c", "upload.c", "direct_writer.c", "fcgi_stdin.c", "fcgi_request.c", "fcgi_answer.c",
                          "fcgi_wire.c")],
    include_dirs=[HERE],
    libraries=["pthread"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
