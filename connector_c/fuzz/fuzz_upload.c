/* libFuzzer harness: the upload edge (upload.c over multipart.c), with real temporary files.
 *
 * Input: byte 0 picks a boundary, byte 1 a chunk size; the rest is the body. The body is parsed
 * twice, in one piece and in chunks, and both must agree on everything: status, error, fields,
 * parts and the files' bytes. Whatever happens, no temporary file outlives upload_free, and every
 * file a completed upload reports has the size it claims. Every file part goes through the direct
 * writer (O_DIRECT from a thread, direct_writer.h) from its first byte.
 */
#include <assert.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../upload.h"

static const char *const boundaries[] = {"XyZ", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a", "b:c d'()+_,-./=?"};
static char directory[] = "/tmp/fcgi-fuzz-upload-XXXXXX";

static int files_in_directory(void)
{
    DIR *d = opendir(directory);
    assert(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    assert(mkdtemp(directory));
    return 0;
}

static upload *parse(const char *boundary, const char *body, size_t len, size_t chunk)
{
    upload_limits limits = {.max_body = 1 << 20, .max_file = 4096, .max_field_memory = 2048,
                            .max_parts = 8, .max_header = 256, .read_timeout_ms = 1000,
                            .direct_after = 1};
    upload *u = upload_new(boundary, strlen(boundary), directory, &limits);
    assert(u);
    for (size_t at = 0; at < len && upload_status(u) == UPLOAD_MORE; at += chunk)
        upload_feed(u, body + at, len - at < chunk ? len - at : chunk);
    upload_finish(u);
    return u;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *boundary = boundaries[data[0] % (sizeof boundaries / sizeof *boundaries)];
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    upload *whole = parse(boundary, body, len, len ? len : 1);
    upload *pieces = parse(boundary, body, len, (size_t)data[1] % 17 + 1);

    assert(upload_status(whole) == upload_status(pieces));
    assert(upload_error_status(whole) == upload_error_status(pieces));
    if (upload_status(whole) == UPLOAD_ERROR) {
        assert(strcmp(upload_error_message(whole), upload_error_message(pieces)) == 0);
        assert(files_in_directory() == 0); /* an error removes every file at once */
    } else {
        size_t parts = upload_part_count(whole);
        assert(parts == upload_part_count(pieces));
        assert(upload_field_memory_size(whole) == upload_field_memory_size(pieces));
        if (upload_field_memory_size(whole))
            assert(memcmp(upload_field_memory(whole), upload_field_memory(pieces),
                          upload_field_memory_size(whole)) == 0);
        for (size_t i = 0; i < parts; i++) {
            const upload_part *a = upload_get_part(whole, i), *b = upload_get_part(pieces, i);
            assert(a->is_file == b->is_file && a->size == b->size);
            if (a->path) {
                static char bytes_a[4097], bytes_b[4097]; /* max_file + 1 */
                size_t n = read_file(a->path, bytes_a, sizeof bytes_a);
                assert(n == a->size && read_file(b->path, bytes_b, sizeof bytes_b) == n);
                assert(memcmp(bytes_a, bytes_b, n) == 0);
            }
        }
        uint64_t *index = calloc(5 * (parts + 1), sizeof *index);
        upload_index(whole, index);
        for (size_t i = 0; i < parts; i++)
            assert(index[5 * i + 3] + index[5 * i + 4] <= upload_field_memory_size(whole));
        free(index);
    }
    upload_free(whole);
    upload_free(pieces);
    assert(files_in_directory() == 0); /* no temporary file outlives its upload */
    return 0;
}
