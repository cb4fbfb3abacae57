/* mod_fcgi_backend: an Apache 2.4 handler that speaks FastCGI to fcgi_backend, with the upload
 * extension (FCGI_X_STDIN) for request bodies of known length.
 *
 *     LoadModule fcgi_backend_module modules/mod_fcgi_backend.so
 *     <FilesMatch "\.mustache$">
 *         SetHandler fcgi-backend
 *     </FilesMatch>
 *
 * The backend's socket is found one level above the request's DocumentRoot
 * (DocumentRoot /var/www/site/webroot -> /var/www/site/fcgi_backend.sock), unless
 * FcgiBackendSocket names one. Directives:
 *     FcgiBackendSocket PATH          the backend's unix socket
 *     FcgiBackendUploadStream On|Off  send bodies of known length as one FCGI_X_STDIN stream (On)
 *     FcgiBackendTimeout SECONDS      longest wait on the backend for one read or write (300)
 */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_script.h"
#include "apr_strings.h"

#include "fcgi_wire.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

module AP_MODULE_DECLARE_DATA fcgi_backend_module;

#define HANDLER_NAME "fcgi-backend"
#define SOCKET_NAME "fcgi_backend.sock"

#define REQUEST_ID 1
#define MAX_CONTENT FCGI_MAX_CONTENT
#define MAX_RESPONSE_HEADER (64 * 1024)
#define READ_SIZE (64 * 1024)
#define BODY_READ_SIZE (256 * 1024)

typedef struct {
    const char *socket_path;   /* NULL: one level above the DocumentRoot */
    int upload_stream;         /* -1 unset, 0 off, 1 on */
    int timeout;               /* seconds; 0 unset */
} dir_config;

/* ---- configuration ------------------------------------------------------------------------ */

static void *create_dir_config(apr_pool_t *p, char *dir)
{
    dir_config *c = apr_pcalloc(p, sizeof *c);
    c->upload_stream = -1;
    return c;
}

static void *merge_dir_config(apr_pool_t *p, void *base_, void *add_)
{
    dir_config *base = base_, *add = add_, *c = apr_pcalloc(p, sizeof *c);
    c->socket_path = add->socket_path ? add->socket_path : base->socket_path;
    c->upload_stream = add->upload_stream != -1 ? add->upload_stream : base->upload_stream;
    c->timeout = add->timeout ? add->timeout : base->timeout;
    return c;
}

static const char *set_timeout(cmd_parms *cmd, void *conf, const char *arg)
{
    int seconds = atoi(arg);
    if (seconds <= 0)
        return "FcgiBackendTimeout must be a positive number of seconds";
    ((dir_config *)conf)->timeout = seconds;
    return NULL;
}

static const command_rec commands[] = {
    AP_INIT_TAKE1("FcgiBackendSocket", ap_set_file_slot, (void *)APR_OFFSETOF(dir_config, socket_path),
                  RSRC_CONF | ACCESS_CONF, "the backend's unix socket (default: beside the DocumentRoot)"),
    AP_INIT_FLAG("FcgiBackendUploadStream", ap_set_flag_slot, (void *)APR_OFFSETOF(dir_config, upload_stream),
                 RSRC_CONF | ACCESS_CONF, "send request bodies of known length as one FCGI_X_STDIN stream"),
    AP_INIT_TAKE1("FcgiBackendTimeout", set_timeout, NULL, RSRC_CONF | ACCESS_CONF,
                  "seconds to wait on the backend for one read or write"),
    {NULL}
};

/* ---- records ------------------------------------------------------------------------------ */

typedef struct {
    request_rec *r;
    int fd;
    const char *path;
} backend;

static apr_status_t close_backend(void *data)
{
    backend *b = data;
    if (b->fd >= 0) {
        close(b->fd);
        b->fd = -1;
    }
    return APR_SUCCESS;
}

/* Write every byte of iov[0..count), through partial writes and EINTR. */
static apr_status_t send_all(backend *b, struct iovec *iov, int count)
{
    while (count > 0) {
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = count;
        ssize_t n = sendmsg(b->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? APR_TIMEUP : APR_FROM_OS_ERROR(errno);
        }
        while (count > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return APR_SUCCESS;
}

static apr_status_t send_record(backend *b, int type, const char *data, size_t len)
{
    static const char padding[8];
    unsigned char header[8];
    fcgi_fill_header(header, type, REQUEST_ID, len);
    struct iovec iov[3] = {
        {header, 8}, {(void *)data, len}, {(void *)padding, header[6]},
    };
    return send_all(b, iov, 3);
}

/* A stream (PARAMS, STDIN) as records of at most 64 KiB. */
static apr_status_t send_stream(backend *b, int type, const char *data, size_t len)
{
    while (len) {
        size_t n = len > MAX_CONTENT ? MAX_CONTENT : len;
        apr_status_t rv = send_record(b, type, data, n);
        if (rv != APR_SUCCESS)
            return rv;
        data += n;
        len -= n;
    }
    return APR_SUCCESS;
}

static void put_length(struct apr_array_header_t *out, size_t n)
{
    if (n < 128) {
        *(unsigned char *)apr_array_push(out) = (unsigned char)n;
    } else {
        unsigned char b[4] = {(unsigned char)((n >> 24) | 0x80), (unsigned char)(n >> 16),
                              (unsigned char)(n >> 8), (unsigned char)n};
        for (int i = 0; i < 4; i++)
            *(unsigned char *)apr_array_push(out) = b[i];
    }
}

static void put_pair(struct apr_array_header_t *out, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    put_length(out, nl);
    put_length(out, vl);
    for (size_t i = 0; i < nl; i++)
        *(char *)apr_array_push(out) = name[i];
    for (size_t i = 0; i < vl; i++)
        *(char *)apr_array_push(out) = value[i];
}

/* ---- the request ------------------------------------------------------------------------- */

static const char *socket_path_for(request_rec *r, dir_config *conf)
{
    if (conf->socket_path)
        return conf->socket_path;
    char *root = apr_pstrdup(r->pool, ap_document_root(r));
    size_t len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        root[--len] = '\0';
    char *slash = strrchr(root, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    return apr_pstrcat(r->pool, root, "/" SOCKET_NAME, NULL);
}

static int connect_backend(request_rec *r, backend *b, int timeout)
{
    struct sockaddr_un addr = {0};
    if (strlen(b->path) >= sizeof addr.sun_path) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "fcgi_backend: socket path too long: %s", b->path);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, b->path);
    b->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (b->fd < 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, errno, r, "fcgi_backend: cannot create a socket");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_cleanup_register(r->pool, b, close_backend, apr_pool_cleanup_null);
    struct timeval tv = {timeout, 0};
    setsockopt(b->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(b->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int sndbuf = 1024 * 1024; /* more of an upload in flight per system call, on both sides */
    setsockopt(b->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (connect(b->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, errno, r,
                      "fcgi_backend: cannot connect to the backend at %s (is fcgi-backend running?)", b->path);
        return HTTP_SERVICE_UNAVAILABLE;
    }
    return OK;
}

/* Filters between the handler and the protocol (DEFLATE, say) may change the body's length, so
   Content-Length does not tell how many bytes will be read. */
static int body_may_be_transformed(request_rec *r)
{
    return r->input_filters != r->proto_input_filters;
}

static apr_status_t send_begin_and_params(request_rec *r, backend *b)
{
    unsigned char begin[8] = {0, FCGI_RESPONDER, 0 /* no KEEP_CONN */, 0, 0, 0, 0, 0};
    apr_status_t rv = send_record(b, FCGI_BEGIN_REQUEST, (const char *)begin, 8);
    if (rv != APR_SUCCESS)
        return rv;

    ap_add_common_vars(r);
    ap_add_cgi_vars(r);
    /* The backend serves the whole site from its root: the path is all PATH_INFO (as the backend
       takes it behind mod_proxy_fcgi). Apache's split, SCRIPT_NAME up to the deepest file or
       folder on disk, meant an application routing on PATH_INFO (Flask, Django) saw /5 for
       /items/5 and 404'd. */
    const char *script_name = apr_table_get(r->subprocess_env, "SCRIPT_NAME");
    const char *path_info = apr_table_get(r->subprocess_env, "PATH_INFO");
    apr_table_setn(r->subprocess_env, "PATH_INFO",
                   apr_pstrcat(r->pool, script_name ? script_name : "", path_info ? path_info : "", NULL));
    apr_table_setn(r->subprocess_env, "SCRIPT_NAME", "");
    const char *auth = apr_table_get(r->headers_in, "Authorization");
    if (auth && !apr_table_get(r->subprocess_env, "HTTP_AUTHORIZATION"))
        apr_table_setn(r->subprocess_env, "HTTP_AUTHORIZATION", auth);

    if (body_may_be_transformed(r))
        apr_table_unset(r->subprocess_env, "CONTENT_LENGTH"); /* the records' end tells the length */

    apr_array_header_t *params = apr_array_make(r->pool, 4096, 1);
    const apr_array_header_t *env = apr_table_elts(r->subprocess_env);
    const apr_table_entry_t *e = (const apr_table_entry_t *)env->elts;
    for (int i = 0; i < env->nelts; i++)
        if (e[i].key && e[i].val)
            put_pair(params, e[i].key, e[i].val);
    rv = send_stream(b, FCGI_PARAMS, params->elts, (size_t)params->nelts);
    return rv == APR_SUCCESS ? send_record(b, FCGI_PARAMS, NULL, 0) : rv;
}

static int send_iov(void *ctx, struct iovec *iov, int count)
{
    return (int)send_all(ctx, iov, count);
}

/* The body: one FCGI_X_STDIN stream when its length is known, else STDIN records. Returns OK, or an
   HTTP status when the client's body could not be read (the backend then sees a short stream). */
static int send_body(request_rec *r, backend *b, int upload_stream)
{
    const char *te = apr_table_get(r->headers_in, "Transfer-Encoding");
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t length = -1;
    if (!te && cl) {
        char *end;
        if (apr_strtoff(&length, cl, &end, 10) != APR_SUCCESS || *end || length < 0)
            return HTTP_BAD_REQUEST;
    }
    fcgi_batch *q = apr_palloc(r->pool, sizeof *q);
    /* X_STDIN announces the length: only when exactly that many bytes will be read. */
    int raw = upload_stream && length > 0 && length <= 0xFFFFFFFFLL && !body_may_be_transformed(r);
    fcgi_batch_init(q, raw, REQUEST_ID, send_iov, b);
    apr_status_t rv;
    if (q->raw) {
        unsigned char n[4] = {(unsigned char)(length >> 24), (unsigned char)(length >> 16),
                              (unsigned char)(length >> 8), (unsigned char)length};
        if ((rv = send_record(b, FCGI_X_STDIN, (const char *)n, 4)) != APR_SUCCESS)
            goto backend_failed;
    }

    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_off_t sent = 0;
    int seen_eos = length == 0;
    while (!seen_eos) {
        rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ, BODY_READ_SIZE);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r,
                          "fcgi_backend: the client's body broke off after %" APR_OFF_T_FMT " bytes; "
                          "closing the backend connection", sent);
            close_backend(b); /* the backend sees a short stream and cleans up */
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        }
        for (apr_bucket *e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = APR_BUCKET_NEXT(e)) {
            if (APR_BUCKET_IS_EOS(e)) {
                seen_eos = 1;
                break;
            }
            const char *data;
            apr_size_t len;
            if (apr_bucket_read(e, &data, &len, APR_BLOCK_READ) != APR_SUCCESS || !len)
                continue;
            if (q->raw && sent + (apr_off_t)len > length)
                len = (apr_size_t)(length - sent); /* never more than announced */
            if ((rv = fcgi_batch_add(q, data, len)) != APR_SUCCESS)
                goto backend_failed;
            sent += (apr_off_t)len;
        }
        /* the buckets' memory goes with the cleanup: send before it */
        if ((rv = fcgi_batch_flush(q)) != APR_SUCCESS)
            goto backend_failed;
        apr_brigade_cleanup(bb);
    }
    if (q->raw && sent != length) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "fcgi_backend: body ended after %" APR_OFF_T_FMT
                      " of %" APR_OFF_T_FMT " bytes", sent, length);
        close_backend(b);
        return HTTP_BAD_REQUEST;
    }
    if ((rv = send_record(b, FCGI_STDIN, NULL, 0)) != APR_SUCCESS)
        goto backend_failed;
    return OK;

backend_failed:
    /* The backend may have answered early (413, say) and closed: the response still gets read. */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r, "fcgi_backend: writing the body to %s stopped", b->path);
    return OK;
}

/* ---- the response -------------------------------------------------------------------------- */

typedef struct {
    backend *b;
    char *buf;            /* bytes read from the backend */
    size_t start, end;
    int ended;            /* END_REQUEST read */
} reader;

/* Next record's type and content (pointing into the buffer), or -1 on EOF/error (errno set). */
static int next_record(reader *rd, const char **content, size_t *len)
{
    for (;;) {
        size_t have = rd->end - rd->start;
        if (have >= 8) {
            const unsigned char *h = (const unsigned char *)rd->buf + rd->start;
            size_t clen = (size_t)h[4] << 8 | h[5], plen = h[6];
            if (h[0] != FCGI_VERSION_1) {
                errno = EPROTO;
                return -1;
            }
            if (have >= 8 + clen + plen) {
                *content = rd->buf + rd->start + 8;
                *len = clen;
                rd->start += 8 + clen + plen;
                return h[1];
            }
        }
        if (rd->start) {
            memmove(rd->buf, rd->buf + rd->start, have);
            rd->start = 0;
            rd->end = have;
        }
        ssize_t n = read(rd->b->fd, rd->buf + rd->end, READ_SIZE + 8 + MAX_CONTENT + 255 - rd->end);
        if (n > 0) {
            rd->end += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            errno = ECONNRESET;
        return -1;
    }
}

/* Apply the CGI-style response header block (without its blank line) to r. NULL, or what is
   wrong with it: a status or header that HTTP does not allow is never passed to the client.
   *declared: the Content-Length passed on, or -1 (none, or not one number: then dropped, and
   Apache frames the answer). */
static const char *apply_headers(request_rec *r, char *block, apr_off_t *declared)
{
    *declared = -1;
    int length_refused = 0;
    int status = HTTP_OK;
    const char *status_line = NULL;
    char *saveptr = NULL;
    for (char *line = apr_strtok(block, "\n", &saveptr); line; line = apr_strtok(NULL, "\n", &saveptr)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r')
            line[--n] = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            return "a header line without ':'";
        *colon = '\0';
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        if (!fcgi_header_name_ok(line))
            return "a header name that is not a token";
        if (!fcgi_header_value_ok(value))
            return apr_psprintf(r->pool, "a control character in header %s", line);
        if (!strcasecmp(line, "Status")) {
            status = fcgi_parse_status(value);
            if (status < 0)
                return apr_psprintf(r->pool, "Status %.40s%s (a final status 200-599 with a short reason "
                                    "is required)", value, strlen(value) > 40 ? "..." : "");
            status_line = apr_pstrdup(r->pool, value);
        } else if (!strcasecmp(line, "Content-Type")) {
            ap_set_content_type(r, apr_pstrdup(r->pool, value));
        } else if (!strcasecmp(line, "Content-Length")) {
            long long length = fcgi_parse_length(value);
            if (length < 0 || *declared >= 0 || length_refused) { /* (a second one drops the first too) */
                if (!length_refused)
                    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "fcgi_backend: the backend's Content-Length is "
                                  "not one number (%.40s); the answer goes without it", value);
                apr_table_unset(r->headers_out, "Content-Length");
                *declared = -1;
                length_refused = 1;
            } else {
                *declared = (apr_off_t)length;
                apr_table_setn(r->headers_out, "Content-Length", apr_pstrdup(r->pool, value));
            }
        } else if (!strcasecmp(line, "ETag") || !strcasecmp(line, "Last-Modified") ||
                   !strcasecmp(line, "Content-Range")) {
            /* Where mod_proxy_fcgi puts them, for the filters that read them there: mod_deflate
               marks or removes the tag of a compressed answer and leaves a range as it is */
            apr_table_set(r->headers_out, line, value);
        } else if (!strcasecmp(line, "Location")) {
            apr_table_setn(r->headers_out, "Location", apr_pstrdup(r->pool, value));
            if (status == HTTP_OK && !status_line)
                status = HTTP_MOVED_TEMPORARILY; /* CGI: a Location without a Status is a redirect */
        } else if (fcgi_hop_by_hop(line, value)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "fcgi_backend: the backend's hop-by-hop header %s is "
                          "dropped (Apache frames the answer and keeps the connection)", line);
        } else {
            apr_table_add(r->err_headers_out, line, value); /* kept on error responses too (Set-Cookie) */
        }
    }
    r->status = status;
    if (status_line && strlen(status_line) > 4)
        r->status_line = status_line;
    if (r->header_only || status == HTTP_NO_CONTENT || status == HTTP_NOT_MODIFIED)
        *declared = -1; /* no body that the length speaks of */
    return NULL;
}

/* Body bytes of the backend's answer for the client: never past its Content-Length (a client
   would take the rest for the start of the next answer on the connection). */
static void add_body(request_rec *r, apr_bucket_brigade *bb, const char *data, size_t len, apr_off_t declared,
                     apr_off_t *written)
{
    apr_off_t before = *written; /* body bytes the backend wrote, those dropped included */
    *written += (apr_off_t)len;
    if (declared >= 0 && *written > declared) {
        if (before <= declared) /* the record that goes past it: logged once */
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "fcgi_backend: the backend sent more than its "
                          "Content-Length (%" APR_OFF_T_FMT "); the rest is dropped", declared);
        len = before < declared ? (size_t)(declared - before) : 0;
    }
    if (len)
        apr_brigade_write(bb, NULL, NULL, data, len);
}

static void log_stderr(request_rec *r, const char *data, size_t len)
{
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len)
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "fcgi_backend: %.*s", (int)len, data);
}

/* Part of the response is out and the rest will not come: end the client connection, so that the
   answer cannot look complete (no last chunk, or fewer bytes than its Content-Length). */
static int cut_off(request_rec *r, apr_bucket_brigade *bb)
{
    conn_rec *c = r->connection;
    APR_BRIGADE_INSERT_TAIL(bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
    c->keepalive = AP_CONN_CLOSE;
    return OK;
}

static int relay_response(request_rec *r, backend *b)
{
    conn_rec *c = r->connection;
    reader rd = {b, apr_palloc(r->pool, READ_SIZE + 8 + MAX_CONTENT + 255), 0, 0, 0};
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    char *head = apr_palloc(r->pool, MAX_RESPONSE_HEADER + 1);
    size_t head_len = 0;
    int headers_done = 0;
    apr_off_t declared = -1, written = 0;
    const char *content;
    size_t len;
    int type;

    while ((type = next_record(&rd, &content, &len)) >= 0) {
        if (type == FCGI_STDERR) {
            log_stderr(r, content, len);
        } else if (type == FCGI_END_REQUEST) {
            rd.ended = 1;
            break;
        } else if (type == FCGI_STDOUT && len) {
            if (!headers_done) {
                size_t take = len < MAX_RESPONSE_HEADER - head_len ? len : MAX_RESPONSE_HEADER - head_len;
                memcpy(head + head_len, content, take);
                head_len += take;
                head[head_len] = '\0';
                char *blank = strstr(head, "\r\n\r\n");
                size_t sep = 4;
                if (!blank) {
                    blank = strstr(head, "\n\n");
                    sep = 2;
                }
                if (!blank) {
                    if (head_len >= MAX_RESPONSE_HEADER) {
                        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "fcgi_backend: response headers from %s "
                                      "exceed %d bytes", b->path, MAX_RESPONSE_HEADER);
                        return HTTP_BAD_GATEWAY;
                    }
                    continue;
                }
                *blank = '\0';
                size_t body_at = (size_t)(blank - head) + sep;
                const char *wrong = apply_headers(r, head, &declared);
                if (wrong) {
                    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "fcgi_backend: refused the response from %s: %s",
                                  b->path, wrong);
                    return HTTP_BAD_GATEWAY;
                }
                headers_done = 1;
                /* body bytes that came in the same record as the end of the headers */
                size_t in_head = head_len - body_at;
                size_t from_record = len - take;
                add_body(r, bb, head + body_at, in_head, declared, &written);
                add_body(r, bb, content + take, from_record, declared, &written);
            } else {
                add_body(r, bb, content, len, declared, &written);
            }
            /* Stream: hand what we have to the client whenever the backend has nothing more buffered. */
            if (rd.end - rd.start < 8 && !APR_BRIGADE_EMPTY(bb)) {
                APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
                if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS || c->aborted) {
                    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "fcgi_backend: the client went away during the response");
                    return OK; /* closing the backend socket tells the backend */
                }
                apr_brigade_cleanup(bb);
            }
        }
    }

    if (!rd.ended) {
        int saved = errno;
        ap_log_rerror(APLOG_MARK, APLOG_ERR, saved, r, "fcgi_backend: the backend at %s %s before the end "
                      "of the response", b->path, saved == EAGAIN ? "timed out" : "closed the connection");
        if (!headers_done)
            return saved == EAGAIN ? HTTP_GATEWAY_TIME_OUT : HTTP_BAD_GATEWAY;
        return cut_off(r, bb);
    }
    if (!headers_done) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "fcgi_backend: the backend at %s ended the request without "
                      "response headers", b->path);
        return HTTP_BAD_GATEWAY;
    }
    if (declared >= 0 && written < declared) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "fcgi_backend: the backend's body ended at %" APR_OFF_T_FMT
                      " of its Content-Length %" APR_OFF_T_FMT, written, declared);
        return cut_off(r, bb);
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
    return OK;
}

static int fcgi_backend_handler(request_rec *r)
{
    if (!r->handler || strcmp(r->handler, HANDLER_NAME))
        return DECLINED;
    dir_config *conf = ap_get_module_config(r->per_dir_config, &fcgi_backend_module);
    backend *b = apr_pcalloc(r->pool, sizeof *b);
    b->r = r;
    b->fd = -1;
    b->path = socket_path_for(r, conf);
    if (!b->path) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "fcgi_backend: cannot derive the socket from DocumentRoot %s",
                      ap_document_root(r));
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    int rc = connect_backend(r, b, conf->timeout ? conf->timeout : 300);
    if (rc != OK)
        return rc;
    apr_status_t rv = send_begin_and_params(r, b);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, "fcgi_backend: sending the request to %s failed", b->path);
        return HTTP_SERVICE_UNAVAILABLE;
    }
    rc = send_body(r, b, conf->upload_stream != 0);
    if (rc != OK)
        return rc;
    rc = relay_response(r, b);
    close_backend(b);
    return rc;
}

static void register_hooks(apr_pool_t *p)
{
    ap_hook_handler(fcgi_backend_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(fcgi_backend) = {
    STANDARD20_MODULE_STUFF,
    create_dir_config,
    merge_dir_config,
    NULL,
    NULL,
    commands,
    register_hooks,
    AP_MODULE_FLAG_NONE
};
