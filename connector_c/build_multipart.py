"""cffi build (API mode) of the multipart parser, its upload edge and the STDIN reader as fcgi_backend._multipart.

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
int upload_read_fd(upload *u, int fd, uint64_t n);
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

int fcgi_stdin_feed(upload *u, int fd, unsigned request_id, char *buf, size_t cap, size_t buffered_len,
                    int timeout_ms, size_t *rest_start, size_t *rest_len);
""")

ffibuilder.set_source(
    "fcgi_backend._multipart",
    '#include "upload.h"\n#include "fcgi_stdin.h"',
    sources=[os.path.relpath(os.path.join(HERE, name), ROOT) for name in ("multipart.c", "upload.c", "fcgi_stdin.c")],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
