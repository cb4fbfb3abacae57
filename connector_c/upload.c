/* A multipart upload in progress: see upload.h. */
#define _GNU_SOURCE
#include "upload.h"
#include "direct_writer.h"
#include "multipart.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WRITE_BUFFER_SIZE (256 * 1024)
#define UNBUFFERED_WRITE_SIZE (64 * 1024) /* pieces this large skip the buffer: no copy */
#define READ_BUFFER_SIZE (256 * 1024)
/* A file part that outgrows the write buffer gets its disk blocks reserved ahead of the writes,
   this much at a time: ext4 then skips its per-block delayed allocation (upload_parts_bench:
   writing 1 GiB took 0.35 s of CPU instead of 0.83 s), and an upload ties up at most this much
   unwritten space. */
#define PREALLOCATE_STEP (64 * 1024 * 1024)

struct upload {
    mp_parser parser;
    upload_limits limits;
    char *directory;

    upload_part *parts;
    size_t part_count, part_capacity, file_count;
    int in_part;

    int fd;                    /* temporary file of the current file part, or -1 */
    char *wbuf;                /* pending bytes for fd */
    size_t wbuf_len;
    uint64_t file_written;     /* bytes of the current file part written to fd */
    uint64_t file_reserved;    /* end of fd's blocks reserved by fallocate (0: none) */
    int direct_possible;       /* the current file part may still go on with O_DIRECT */
    direct_writer *writer;     /* ... and does, from here: wbuf is empty, the writer's buffer fills */
    size_t writer_fill;

    char *fields;              /* field parts as name NUL value NUL, back to back */
    uint64_t fields_len, fields_capacity;
    int fields_have_nul;       /* a value holds a NUL byte, so NUL does not separate fields */
    uint64_t field_bytes;      /* names and values: what max_field_memory limits */

    uint64_t bytes_in;
    int status;                /* enum upload_status */
    int error_status;          /* HTTP status for the error */
    char message[256];
    char *rbuf;                /* upload_read_fd's buffer */
    uint64_t fd_unread;        /* of upload_read_fd's n, the bytes it left on the fd */
};

static int set_error(upload *u, int http_status, const char *fmt, const char *detail)
{
    if (u->status != UPLOAD_ERROR) {
        u->status = UPLOAD_ERROR;
        u->error_status = http_status;
        snprintf(u->message, sizeof u->message, fmt, detail ? detail : "");
        upload_remove_files(u);
    }
    return UPLOAD_ERROR;
}

static char *copy_string(const char *s)
{
    return s ? strdup(s) : NULL;
}

upload *upload_new(const char *boundary, size_t boundary_len, const char *directory,
                   const upload_limits *limits)
{
    upload *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->limits = *limits;
    u->fd = -1;
    u->directory = directory ? strdup(directory) : NULL;
    u->wbuf = malloc(WRITE_BUFFER_SIZE);
    if ((directory && !u->directory) || !u->wbuf) {
        upload_free(u);
        return NULL;
    }
    if (mp_init(&u->parser, boundary, boundary_len, limits->max_header) != MP_OK)
        set_error(u, 400, "%s", u->parser.error_message);
    return u;
}

/* ---- writing file parts -------------------------------------------------------------------- */

/* Reserve the blocks for the next PREALLOCATE_STEP bytes once a write would pass the reserved
   end, for files past the write buffer's size only (small files gain nothing). A file system
   without fallocate, or a full one, is left to write(2) and its own errors. */
static void reserve_ahead(upload *u, size_t len)
{
    uint64_t end = u->file_written + len;
    if (end <= u->file_reserved || end <= WRITE_BUFFER_SIZE)
        return;
    uint64_t from = u->file_reserved > u->file_written ? u->file_reserved : u->file_written;
    uint64_t step = PREALLOCATE_STEP;
    if (u->limits.max_file > from && u->limits.max_file - from < step)
        step = u->limits.max_file - from; /* never reserve past what the file may reach */
    if (fallocate(u->fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)step) == 0)
        u->file_reserved = from + step;
    else
        u->file_reserved = UINT64_MAX; /* not supported or no room: do not ask again */
}

static int write_file(upload *u, const char *data, size_t len)
{
    reserve_ahead(u, len);
    int error = write_fully(u->fd, data, len);
    if (error)
        return set_error(u, 500, "cannot write uploaded file: %s", strerror(error));
    u->file_written += len;
    return UPLOAD_MORE;
}

static int flush_file(upload *u)
{
    if (u->wbuf_len && write_file(u, u->wbuf, u->wbuf_len) != UPLOAD_MORE)
        return UPLOAD_ERROR;
    u->wbuf_len = 0;
    return UPLOAD_MORE;
}

/* The writer's filled buffer (its first len bytes) to its thread. */
static int queue_direct(upload *u, size_t len)
{
    reserve_ahead(u, len);
    int error = direct_writer_queue(u->writer, len);
    u->file_written += len;
    u->writer_fill = 0;
    return error ? set_error(u, 500, "cannot write uploaded file: %s", strerror(error)) : UPLOAD_MORE;
}

/* The file part has passed limits.direct_after: write up to the next block boundary as before
   (taking that much of data), then hand on to a direct writer. If data does not reach the
   boundary, the next piece tries again; a file system without O_DIRECT keeps the buffered way. */
static int start_direct(upload *u, const char **data, size_t *len)
{
    uint64_t pending = u->file_written + u->wbuf_len;
    size_t to_boundary = (size_t)((DIRECT_ALIGN - pending % DIRECT_ALIGN) % DIRECT_ALIGN);
    if (to_boundary > *len)
        return UPLOAD_MORE;
    if (flush_file(u) != UPLOAD_MORE || (to_boundary && write_file(u, *data, to_boundary) != UPLOAD_MORE))
        return UPLOAD_ERROR;
    *data += to_boundary;
    *len -= to_boundary;
    u->direct_possible = 0;
    u->writer = direct_writer_start(u->fd);
    u->writer_fill = 0;
    return UPLOAD_MORE;
}

static int direct_data(upload *u, const char *data, size_t len)
{
    while (len) {
        size_t take = DIRECT_BUFFER_SIZE - u->writer_fill;
        if (take > len)
            take = len;
        memcpy(direct_writer_buffer(u->writer) + u->writer_fill, data, take);
        u->writer_fill += take;
        data += take;
        len -= take;
        if (u->writer_fill == DIRECT_BUFFER_SIZE && queue_direct(u, DIRECT_BUFFER_SIZE) != UPLOAD_MORE)
            return UPLOAD_ERROR;
    }
    return UPLOAD_MORE;
}

/* The file part ends: its whole blocks go to the writer, which then finishes; the last partial
   block (O_DIRECT writes whole ones) is left in wbuf for a buffered write. */
static int finish_direct(upload *u)
{
    size_t whole = u->writer_fill & ~(size_t)(DIRECT_ALIGN - 1), tail = u->writer_fill - whole;
    memcpy(u->wbuf, direct_writer_buffer(u->writer) + whole, tail);
    if (whole && queue_direct(u, whole) != UPLOAD_MORE)
        return UPLOAD_ERROR;
    int error = direct_writer_finish(u->writer, 0);
    u->writer = NULL;
    if (error)
        return set_error(u, 500, "cannot write uploaded file: %s", strerror(error));
    u->wbuf_len = tail;
    return UPLOAD_MORE;
}

/* The file part is complete: release the reserved blocks past its end, then close it. */
static int close_file(upload *u)
{
    if (u->writer && finish_direct(u) != UPLOAD_MORE)
        return UPLOAD_ERROR;
    int rc = flush_file(u);
    if (rc == UPLOAD_MORE && u->file_reserved != UINT64_MAX && u->file_reserved > u->file_written &&
        ftruncate(u->fd, (off_t)u->file_written) != 0)
        rc = set_error(u, 500, "cannot write uploaded file: %s", strerror(errno));
    if (u->fd >= 0) { /* set_error closed it already */
        close(u->fd);
        u->fd = -1;
    }
    return rc;
}

static int file_data(upload *u, const char *data, size_t len)
{
    if (u->direct_possible && u->file_written + u->wbuf_len + len > u->limits.direct_after &&
        start_direct(u, &data, &len) != UPLOAD_MORE)
        return UPLOAD_ERROR;
    if (u->writer)
        return direct_data(u, data, len);
    if (len >= UNBUFFERED_WRITE_SIZE || u->wbuf_len + len > WRITE_BUFFER_SIZE) {
        if (flush_file(u) != UPLOAD_MORE)
            return UPLOAD_ERROR;
        if (len >= UNBUFFERED_WRITE_SIZE)
            return write_file(u, data, len);
    }
    memcpy(u->wbuf + u->wbuf_len, data, len);
    u->wbuf_len += len;
    return UPLOAD_MORE;
}

/* Charge n bytes of names or values to the field memory limit. */
static int charge_fields(upload *u, size_t n)
{
    u->field_bytes += n;
    if (u->field_bytes > u->limits.max_field_memory)
        return set_error(u, 413, "form fields exceed the limit of in-memory field data%s", NULL);
    return UPLOAD_MORE;
}

static int field_data(upload *u, const char *data, size_t len)
{
    if (u->fields_len + len > u->fields_capacity) {
        uint64_t want = u->fields_capacity ? u->fields_capacity * 2 : 4096;
        while (want < u->fields_len + len)
            want *= 2;
        char *bigger = realloc(u->fields, want);
        if (!bigger)
            return set_error(u, 500, "out of memory for form fields%s", NULL);
        u->fields = bigger;
        u->fields_capacity = want;
    }
    memcpy(u->fields + u->fields_len, data, len);
    u->fields_len += len;
    return UPLOAD_MORE;
}

/* ---- parser events ------------------------------------------------------------------------- */

static int begin_part(upload *u)
{
    mp_parser *p = &u->parser;
    if (u->part_count >= u->limits.max_parts)
        return set_error(u, 413, "more parts than the limit allows%s", NULL);
    if (u->part_count == u->part_capacity) {
        size_t want = u->part_capacity ? u->part_capacity * 2 : 16;
        upload_part *bigger = realloc(u->parts, want * sizeof *bigger);
        if (!bigger)
            return set_error(u, 500, "out of memory for parts%s", NULL);
        u->parts = bigger;
        u->part_capacity = want;
    }
    upload_part *part = &u->parts[u->part_count++];
    memset(part, 0, sizeof *part);
    part->is_file = p->filename != NULL || p->filename_star != NULL;
    if (part->is_file) { /* a field's name is kept in the field memory instead */
        part->name = copy_string(p->name);
        part->filename = copy_string(p->filename);
        part->filename_star = copy_string(p->filename_star);
        part->content_type = copy_string(p->content_type);
    }
    u->file_count += (size_t)part->is_file;
    u->in_part = 1;
    if (!part->is_file) {
        /* The name goes beside the value, so all fields can be handed over in one piece. */
        part->name_offset = u->fields_len;
        size_t name_len = strlen(p->name);
        if (charge_fields(u, name_len) != UPLOAD_MORE || field_data(u, p->name, name_len + 1) != UPLOAD_MORE)
            return UPLOAD_ERROR;
        part->value_offset = u->fields_len;
    }
    if (part->is_file && u->directory) {
        /* The worker's pid in the name: if the worker dies mid-request, its supervisor finds
           and removes the files it left (UPLOAD_FILE_PREFIX, fcgi_backend/uploads.py). */
        size_t n = strlen(u->directory) + sizeof "/" UPLOAD_FILE_PREFIX "4294967295-XXXXXX";
        part->path = malloc(n);
        if (!part->path)
            return set_error(u, 500, "out of memory%s", NULL);
        snprintf(part->path, n, "%s/" UPLOAD_FILE_PREFIX "%ld-XXXXXX", u->directory, (long)getpid());
        u->fd = mkostemp(part->path, O_CLOEXEC);
        if (u->fd < 0) {
            free(part->path);
            part->path = NULL;
            return set_error(u, 500, "cannot create a temporary file in the upload directory: %s",
                             strerror(errno));
        }
        u->wbuf_len = 0;
        u->file_written = u->file_reserved = 0;
        u->direct_possible = u->limits.direct_after > 0;
    }
    return UPLOAD_MORE;
}

static int part_data(upload *u, const char *data, size_t len)
{
    upload_part *part = &u->parts[u->part_count - 1];
    part->size += len;
    if (part->is_file) {
        if (part->size > u->limits.max_file)
            return set_error(u, 413, "an uploaded file exceeds the file size limit%s", NULL);
        return u->fd >= 0 ? file_data(u, data, len) : UPLOAD_MORE;
    }
    if (!u->fields_have_nul && memchr(data, '\0', len))
        u->fields_have_nul = 1;
    if (charge_fields(u, len) != UPLOAD_MORE)
        return UPLOAD_ERROR;
    return field_data(u, data, len);
}

static int end_part(upload *u)
{
    u->in_part = 0;
    if (!u->parts[u->part_count - 1].is_file)
        return field_data(u, "", 1); /* the NUL after the value */
    return u->fd >= 0 ? close_file(u) : UPLOAD_MORE;
}

int upload_feed(upload *u, const char *data, size_t len)
{
    if (u->status != UPLOAD_MORE)
        return u->status;
    u->bytes_in += len;
    if (u->bytes_in > u->limits.max_body)
        return set_error(u, 413, "request body exceeds the body size limit%s", NULL);
    while (len) {
        size_t used = 0;
        enum mp_event ev = mp_next(&u->parser, data, len, &used);
        data += used;
        len -= used;
        int rc = UPLOAD_MORE;
        switch (ev) {
        case MP_NEED_MORE:
            break;
        case MP_PART_BEGIN:
            rc = begin_part(u);
            break;
        case MP_PART_DATA:
            rc = part_data(u, u->parser.data, u->parser.data_len);
            break;
        case MP_PART_END:
            rc = end_part(u);
            break;
        case MP_DONE:
            u->status = UPLOAD_DONE;
            return UPLOAD_DONE; /* what follows is epilogue */
        case MP_ERROR:
            return set_error(u, u->parser.error == MP_E_HEADER_TOO_LARGE ? 413 : 400,
                             "malformed multipart body: %s", u->parser.error_message);
        }
        if (rc != UPLOAD_MORE)
            return rc;
    }
    return UPLOAD_MORE;
}

ssize_t read_nowait(int fd, void *buf, size_t len)
{
    ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK)
        n = read(fd, buf, len); /* a pipe or file: as it was opened */
    return n;
}

static double monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* The longest next wait in milliseconds: read_timeout_ms, or less as the pace allows (pace.py). */
static int next_wait_ms(const upload *u, double allowance, double seconds_per_byte)
{
    int wait_ms = u->limits.read_timeout_ms > 0 ? u->limits.read_timeout_ms : -1;
    if (seconds_per_byte > 0) {
        double earned_ms = allowance * 1000.0 + 1.0; /* rounded up: a wait of 0 ms would spin */
        if (wait_ms < 0 || earned_ms < (double)wait_ms)
            wait_ms = (int)earned_ms;
    }
    return wait_ms;
}

int upload_read_fd(upload *u, int fd, uint64_t n, double allowance, double seconds_per_byte)
{
    u->fd_unread = n;
    if (u->status == UPLOAD_ERROR)
        return UPLOAD_ERROR;
    if (!u->rbuf && !(u->rbuf = malloc(READ_BUFFER_SIZE)))
        return set_error(u, 500, "out of memory%s", NULL);
    uint64_t total = n;
    double cap = u->limits.read_timeout_ms / 1000.0;
    if (cap <= 0)
        seconds_per_byte = 0; /* waits without end: nothing to pace */
    while (n) {
        size_t want = n < READ_BUFFER_SIZE ? (size_t)n : READ_BUFFER_SIZE;
        ssize_t got = read_nowait(fd, u->rbuf, want);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                double began = seconds_per_byte > 0 ? monotonic_seconds() : 0;
                int ready = poll(&pfd, 1, next_wait_ms(u, allowance, seconds_per_byte));
                if (seconds_per_byte > 0) {
                    allowance -= monotonic_seconds() - began;
                    if (allowance <= 0) {
                        char detail[96];
                        snprintf(detail, sizeof detail, "%llu of %llu bytes read",
                                 (unsigned long long)(total - n), (unsigned long long)total);
                        return set_error(u, 0, "the client sending the upload: a read_timeout behind min_rate; %s", detail);
                    }
                }
                if (ready == 0)
                    return set_error(u, 0, "timed out waiting for the upload stream%s", NULL);
                continue;
            }
            return set_error(u, 0, "reading the upload stream failed: %s", strerror(errno));
        }
        if (got == 0) {
            char detail[64];
            snprintf(detail, sizeof detail, "%llu of %llu", (unsigned long long)(total - n),
                     (unsigned long long)total);
            return set_error(u, 0, "connection closed after %s bytes of the upload stream", detail);
        }
        n -= (uint64_t)got;
        u->fd_unread = n;
        if (seconds_per_byte > 0 && (allowance += (double)got * seconds_per_byte) > cap)
            allowance = cap;
        /* Past the closing boundary the rest is read and dropped (the bytes must leave the socket);
           a rejected body is not read on: a client told 413 need not send gigabytes first. */
        if (u->status == UPLOAD_MORE)
            upload_feed(u, u->rbuf, (size_t)got);
        if (u->status == UPLOAD_ERROR)
            return UPLOAD_ERROR;
    }
    return u->status;
}

void upload_fail_input(upload *u, const char *message)
{
    set_error(u, 0, "%s", message);
}

int upload_finish(upload *u)
{
    if (u->status != UPLOAD_MORE)
        return u->status;
    if (mp_finish(&u->parser) != MP_DONE)
        return set_error(u, 400, "malformed multipart body: %s", u->parser.error_message);
    u->status = UPLOAD_DONE;
    return UPLOAD_DONE;
}

/* ---- results ------------------------------------------------------------------------------- */

int upload_status(const upload *u) { return u->status; }
int upload_error_status(const upload *u) { return u->status == UPLOAD_ERROR ? u->error_status : 0; }
const char *upload_error_message(const upload *u) { return u->message; }
uint64_t upload_bytes_in(const upload *u) { return u->bytes_in; }
uint64_t upload_fd_unread(const upload *u) { return u->fd_unread; }
size_t upload_part_count(const upload *u) { return u->part_count; }
size_t upload_file_count(const upload *u) { return u->file_count; }
const char *upload_field_memory(const upload *u) { return u->fields; }
uint64_t upload_field_memory_size(const upload *u) { return u->fields_len; }
int upload_fields_have_nul(const upload *u) { return u->fields_have_nul; }

void upload_index(const upload *u, uint64_t *out)
{
    for (size_t i = 0; i < u->part_count; i++, out += 5) {
        const upload_part *part = &u->parts[i];
        out[0] = (uint64_t)part->is_file;
        out[1] = part->is_file ? 0 : part->name_offset;
        out[2] = part->is_file ? 0 : part->value_offset - part->name_offset - 1;
        out[3] = part->is_file ? 0 : part->value_offset;
        out[4] = part->is_file ? 0 : part->size;
    }
}

const upload_part *upload_get_part(const upload *u, size_t i)
{
    return i < u->part_count ? &u->parts[i] : NULL;
}

void upload_remove_files(upload *u)
{
    if (u->writer) {
        direct_writer_finish(u->writer, 1);
        u->writer = NULL;
    }
    if (u->fd >= 0) {
        close(u->fd);
        u->fd = -1;
    }
    for (size_t i = 0; i < u->part_count; i++) {
        if (u->parts[i].path) {
            unlink(u->parts[i].path);
            free(u->parts[i].path);
            u->parts[i].path = NULL;
        }
    }
}

void upload_release_file(upload *u, size_t i)
{
    if (i < u->part_count && u->parts[i].path) {
        free(u->parts[i].path);
        u->parts[i].path = NULL;
    }
}

void upload_free(upload *u)
{
    if (!u)
        return;
    upload_remove_files(u);
    for (size_t i = 0; i < u->part_count; i++) {
        free(u->parts[i].name);
        free(u->parts[i].filename);
        free(u->parts[i].filename_star);
        free(u->parts[i].content_type);
    }
    free(u->parts);
    free(u->fields);
    free(u->wbuf);
    free(u->rbuf);
    free(u->directory);
    free(u);
}

int upload_boundary_from_content_type(const char *content_type, size_t len, char *out)
{
    return mp_boundary_from_content_type(content_type, len, out);
}
