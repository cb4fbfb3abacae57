/* Incremental multipart/form-data parser: see multipart.h. */
#include "multipart.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

enum state {
    S_FIRST,        /* the body's first bytes: (CRLF) "--" boundary, nothing else */
    S_DELIM_END,    /* just after a delimiter: "--", transport padding or CRLF */
    S_DELIM_DASH,   /* seen one '-' of the closing "--" */
    S_DELIM_PAD,    /* transport padding (spaces, tabs) before CRLF */
    S_DELIM_LF,     /* seen CR, want LF */
    S_HEADERS,      /* collecting a part's header block */
    S_BODY,         /* part data, searching for the next delimiter */
    S_EPILOGUE,     /* after the closing delimiter; bytes are discarded */
    S_ERROR
};

static enum mp_event fail(mp_parser *p, int error, const char *message)
{
    p->state = S_ERROR;
    p->error = error;
    p->error_message = message;
    return MP_ERROR;
}

/* RFC 2046 bchars: DIGIT / ALPHA / "'()+_,-./:=? " (space not last). */
static int is_bchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("'()+_,-./:=? ", c) != NULL); /* strchr finds the terminator too */
}

int mp_init(mp_parser *p, const char *boundary, size_t boundary_len, size_t max_header)
{
    memset(p, 0, offsetof(mp_parser, header));
    p->header[0] = '\0';
    if (boundary_len == 0 || boundary_len > MP_MAX_BOUNDARY || boundary[boundary_len - 1] == ' ') {
        fail(p, MP_E_BOUNDARY, "boundary must be 1 to 70 characters, not ending in a space");
        return MP_E_BOUNDARY;
    }
    for (size_t i = 0; i < boundary_len; i++) {
        if (!is_bchar((unsigned char)boundary[i])) {
            fail(p, MP_E_BOUNDARY, "boundary contains a character RFC 2046 does not allow");
            return MP_E_BOUNDARY;
        }
    }
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, boundary_len);
    p->delim_len = boundary_len + 4;
    p->max_header = max_header > MP_MAX_HEADER_CAP ? MP_MAX_HEADER_CAP : max_header;
    p->state = S_FIRST;
    p->matched = 2; /* the first delimiter may open the body without a CRLF before it */
    return MP_OK;
}

/* ---- header block ------------------------------------------------------------------------ */

static char *skip_ws(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static void trim_end(char *start, char *end)
{
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
}

/* Parse the parameters of a Content-Disposition value in place: name, filename, filename*. */
static int parse_disposition(mp_parser *p, char *v)
{
    char *s = skip_ws(v);
    size_t type_len = strcspn(s, ";");
    char *type_end = s + type_len;
    while (type_end > s && (type_end[-1] == ' ' || type_end[-1] == '\t'))
        type_end--;
    if ((size_t)(type_end - s) != 9 || strncasecmp(s, "form-data", 9) != 0)
        return -1;
    s += type_len;
    while (*s) {
        s = skip_ws(s + (*s == ';'));
        if (!*s)
            break;
        char *key = s;
        s += strcspn(s, "=;");
        if (*s != '=') { /* a parameter without a value: ignore it */
            continue;
        }
        char *key_end = s;
        *key_end = '\0';
        trim_end(key, key_end);
        s = skip_ws(s + 1);
        char *value = s, *out = s;
        if (*s == '"') {
            /* Quoted, and no escapes: browsers send backslashes as they are (a Windows path) and
               encode '"', CR and LF as %22, %0D, %0A (WHATWG); the value ends at the next quote. */
            s++;
            value = s;
            s += strcspn(s, "\"");
            out = s;
            if (*s == '"')
                s++;
            s += strcspn(s, ";"); /* anything between the closing quote and ';' is ignored */
        } else {
            s += strcspn(s, ";");
            out = s;
            while (out > value && (out[-1] == ' ' || out[-1] == '\t'))
                out--;
        }
        char next = *s;
        *out = '\0';
        if (strcasecmp(key, "name") == 0)
            p->name = value;
        else if (strcasecmp(key, "filename") == 0)
            p->filename = value;
        else if (strcasecmp(key, "filename*") == 0)
            p->filename_star = value;
        if (next == ';')
            s++;
        else if (!next)
            break;
    }
    return p->name ? 0 : -1;
}

/* header[0..header_len) holds the block including its final empty line. */
static enum mp_event parse_headers(mp_parser *p)
{
    char *s = p->header;
    char *end = p->header + p->header_len;
    int have_disposition = 0;
    p->name = p->filename = p->filename_star = p->content_type = NULL;
    *end = '\0';
    while (s < end) {
        char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol)
            break;
        char *line_end = (eol > s && eol[-1] == '\r') ? eol - 1 : eol;
        *line_end = '\0';
        if (line_end == s)
            break; /* the empty line */
        char *colon = memchr(s, ':', (size_t)(line_end - s));
        if (!colon)
            return fail(p, MP_E_BAD_HEADER, "part header line without ':'");
        *colon = '\0';
        trim_end(s, colon);
        char *value = skip_ws(colon + 1);
        trim_end(value, line_end);
        if (strcasecmp(s, "content-disposition") == 0) {
            if (parse_disposition(p, value) != 0)
                return fail(p, MP_E_BAD_HEADER, "part Content-Disposition is not form-data with a name");
            have_disposition = 1;
        } else if (strcasecmp(s, "content-type") == 0) {
            p->content_type = value;
        }
        s = eol + 1;
    }
    if (!have_disposition)
        return fail(p, MP_E_BAD_HEADER, "part has no Content-Disposition header");
    p->state = S_BODY;
    return MP_PART_BEGIN;
}

/* The delimiter's first byte is its only CR: let memchr (vectorised in libc) find each CR, then
   compare. Binary data has a CR every 256 bytes or so; text often none at all. */
static const char *find_delim(const mp_parser *p, const char *hay, size_t n)
{
    size_t m = p->delim_len;
    const char *end = hay + n;
    while ((size_t)(end - hay) >= m) {
        const char *cr = memchr(hay, '\r', (size_t)(end - hay) - m + 1);
        if (!cr)
            return NULL;
        if (memcmp(cr + 1, p->delim + 1, m - 1) == 0)
            return cr;
        hay = cr + 1;
    }
    return NULL;
}

/* ---- the main loop ----------------------------------------------------------------------- */

enum mp_event mp_next(mp_parser *p, const char *buf, size_t len, size_t *consumed)
{
    size_t pos = 0;
    enum mp_event ev = MP_NEED_MORE;

    while (pos < len) {
        switch (p->state) {
        case S_FIRST: {
            /* No preamble: browsers send none, and skipping one would drop a part whose first
               boundary was damaged. A CRLF before the first "--" is tolerated. */
            char c = buf[pos];
            if (p->offset + pos == 0 && c == '\r') {
                p->matched = 0;
            } else if (c != p->delim[p->matched]) {
                ev = fail(p, MP_E_PREAMBLE, "body does not start with its boundary");
                goto out;
            }
            pos++;
            if (++p->matched == p->delim_len) {
                p->matched = 0;
                p->state = S_DELIM_END;
            }
            continue;
        }
        case S_BODY: {
            if (p->matched) {
                /* Continue a delimiter match that began at the end of earlier input. */
                size_t need = p->delim_len - p->matched;
                size_t n = len - pos < need ? len - pos : need;
                if (memcmp(buf + pos, p->delim + p->matched, n) == 0) {
                    pos += n;
                    if (n < need) {
                        p->matched += n;
                        continue; /* input exhausted mid-delimiter */
                    }
                    p->matched = 0;
                    p->state = S_DELIM_END;
                    ev = MP_PART_END;
                    goto out;
                }
                /* Not a delimiter after all: the held bytes were data. The delimiter's only CR is
                   its first byte, so no shorter match can start inside the held bytes. */
                p->data = p->delim;
                p->data_len = p->matched;
                p->matched = 0;
                ev = MP_PART_DATA;
                goto out;
            }
            const char *start = buf + pos;
            size_t avail = len - pos;
            const char *hit = find_delim(p, start, avail);
            if (hit) {
                if (hit > start) {
                    p->data = start;
                    p->data_len = (size_t)(hit - start);
                    pos += p->data_len;
                    ev = MP_PART_DATA;
                    goto out;
                }
                pos += p->delim_len;
                p->state = S_DELIM_END;
                ev = MP_PART_END;
                goto out;
            }
            /* No whole delimiter: hold back a tail that may be the start of one. */
            size_t keep = 0;
            size_t from = avail >= p->delim_len ? avail - (p->delim_len - 1) : 0;
            for (size_t j = from; j < avail; j++) {
                if (start[j] == '\r' && memcmp(start + j, p->delim, avail - j) == 0) {
                    keep = avail - j;
                    break;
                }
            }
            pos = len;
            p->matched = keep;
            if (avail > keep) {
                p->data = start;
                p->data_len = avail - keep;
                ev = MP_PART_DATA;
                goto out;
            }
            continue;
        }
        case S_DELIM_END: {
            char c = buf[pos++];
            if (c == '-')
                p->state = S_DELIM_DASH;
            else if (c == ' ' || c == '\t')
                p->state = S_DELIM_PAD;
            else if (c == '\r')
                p->state = S_DELIM_LF;
            else {
                pos--;
                ev = fail(p, MP_E_BAD_DELIMITER, "boundary not followed by CRLF or \"--\"");
                goto out;
            }
            continue;
        }
        case S_DELIM_DASH:
            if (buf[pos] != '-') {
                ev = fail(p, MP_E_BAD_DELIMITER, "boundary followed by a single '-'");
                goto out;
            }
            pos++;
            p->state = S_EPILOGUE;
            ev = MP_DONE;
            goto out;
        case S_DELIM_PAD: {
            char c = buf[pos];
            if (c == '\r')
                p->state = S_DELIM_LF;
            else if (c != ' ' && c != '\t') {
                ev = fail(p, MP_E_BAD_DELIMITER, "boundary followed by padding and no CRLF");
                goto out;
            }
            pos++;
            continue;
        }
        case S_DELIM_LF:
            if (buf[pos] != '\n') {
                ev = fail(p, MP_E_BAD_DELIMITER, "boundary followed by CR without LF");
                goto out;
            }
            pos++;
            p->header_len = 0;
            p->state = S_HEADERS;
            continue;
        case S_HEADERS: {
            /* Copy up to and including the next LF, then look for the empty line. Lines must end
               in CRLF (RFC 2046): a bare LF would let the header block end somewhere else than
               where the header parser sees it end. */
            const char *nl = memchr(buf + pos, '\n', len - pos);
            size_t n = nl ? (size_t)(nl - (buf + pos)) + 1 : len - pos;
            /* Errors in byte order, so where the input was cut never changes which one is reported. */
            size_t room = p->max_header - p->header_len;
            if (memchr(buf + pos, '\0', n < room ? n : room)) {
                ev = fail(p, MP_E_BAD_HEADER, "NUL byte in a part's headers");
                goto out;
            }
            if (n > room) {
                ev = fail(p, MP_E_HEADER_TOO_LARGE, "part headers exceed the limit");
                goto out;
            }
            memcpy(p->header + p->header_len, buf + pos, n);
            p->header_len += n;
            pos += n;
            if (!nl)
                continue;
            size_t h = p->header_len;
            if (h < 2 || p->header[h - 2] != '\r') {
                ev = fail(p, MP_E_BAD_HEADER, "part header line ends in a bare LF (CRLF required)");
                goto out;
            }
            if (h == 2 || (h >= 4 && memcmp(p->header + h - 4, "\r\n\r\n", 4) == 0)) {
                ev = parse_headers(p);
                goto out;
            }
            continue;
        }
        case S_EPILOGUE:
            pos = len;
            continue;
        case S_ERROR:
        default:
            ev = MP_ERROR;
            goto out;
        }
    }
out:
    if (p->state == S_ERROR)
        ev = MP_ERROR;
    p->offset += pos;
    *consumed = pos;
    return ev;
}

enum mp_event mp_finish(mp_parser *p)
{
    if (p->state == S_EPILOGUE)
        return MP_DONE;
    if (p->state == S_ERROR)
        return MP_ERROR;
    return fail(p, MP_E_TRUNCATED, "body ended before the closing boundary");
}

int mp_boundary_from_content_type(const char *ct, size_t len, char *out)
{
    /* Find "boundary=" as a parameter name (after ';' and optional spaces), case-insensitively. */
    size_t i = 0;
    while (i < len) {
        while (i < len && ct[i] != ';')
            i++;
        if (i >= len)
            return -1;
        i++;
        while (i < len && (ct[i] == ' ' || ct[i] == '\t'))
            i++;
        if (len - i > 9 && strncasecmp(ct + i, "boundary=", 9) == 0) {
            i += 9;
            size_t n = 0;
            if (i < len && ct[i] == '"') {
                i++;
                while (i < len && ct[i] != '"') {
                    if (n >= MP_MAX_BOUNDARY)
                        return -1;
                    out[n++] = ct[i++];
                }
                if (i >= len)
                    return -1;
            } else {
                while (i < len && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t') {
                    if (n >= MP_MAX_BOUNDARY)
                        return -1;
                    out[n++] = ct[i++];
                }
            }
            out[n] = '\0';
            if (n == 0 || out[n - 1] == ' ')
                return -1;
            for (size_t k = 0; k < n; k++)
                if (!is_bchar((unsigned char)out[k]))
                    return -1;
            return (int)n;
        }
    }
    return -1;
}
