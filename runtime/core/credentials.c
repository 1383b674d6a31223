/*
 * credentials.c - reading the shared AWS files (~/.aws/config and
 * ~/.aws/credentials) for the credentials chain of lua/tide/credentials/.
 *
 * The files are INI: `[section]`, `key = value`, full-line comments
 * starting with '#' or ';', and indented continuation lines (nested
 * settings such as `s3 =`), which are skipped. Values are kept verbatim
 * after trimming: no inline comments, since '#' may be part of a token.
 * The text read is wiped before it is freed: it holds secrets.
 */
#include "credentials.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char *trim(char *s, char *end)
{
    while (s < end && is_blank(*s))
        s++;
    while (end > s && is_blank(end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Reads a whole file. Returns 0 with *data (heap, NUL-terminated),
 * and its length in *size, TIDE_ENOTFOUND when it does not exist, TIDE_EIO when it cannot be read. */
static int read_file(const char *path, char **data, size_t *size, struct tide_error *err)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT || errno == ENOTDIR)
            return TIDE_ENOTFOUND;
        return tide_error_set(err, TIDE_EIO, "credentials: cannot read %s: %s", path,
                              strerror(errno));
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (ferror(f)) {
            int e = errno;
            OPENSSL_cleanse(buf, len);
            free(buf);
            fclose(f);
            return tide_error_set(err, TIDE_EIO, "credentials: cannot read %s: %s", path,
                                  strerror(e));
        }
        if (feof(f))
            break;
        if (cap - len - 1 == 0) {
            /* Grow by copying so that no unwiped copy of a secret is left
             * behind by realloc. */
            char *bigger = malloc(cap * 2);
            if (bigger != NULL)
                memcpy(bigger, buf, len);
            OPENSSL_cleanse(buf, len);
            free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "credentials: out of memory reading %s", path);
    buf[len] = '\0';
    *data = buf;
    *size = len;
    return 0;
}

int tide_aws_ini_read(const char *path, tide_aws_ini_visit visit, void *ud, bool *exists,
                      struct tide_error *err)
{
    char *data;
    size_t size;
    *exists = false;
    int rc = read_file(path, &data, &size, err);
    if (rc == TIDE_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    *exists = true;

    /* after_key: the last key had an empty value, so indented lines that
     * follow are its nested settings */
    bool have_section = false, after_key = false;
    const char *section = NULL;
    unsigned line_no = 0;
    char *line = data;
    rc = 0;
    while (*line != '\0' && rc == 0) {
        line_no++;
        char *nl = strchr(line, '\n');
        char *end = nl ? nl : line + strlen(line);
        char *next = nl ? nl + 1 : end;
        bool indented = is_blank(*line);
        char *s = trim(line, end);
        if (*s == '\0' || *s == '#' || *s == ';') {
            /* blank or comment */
        } else if (indented && after_key) {
            /* nested setting under `key =` (e.g. s3 =): not used here */
        } else if (*s == '[') {
            char *close = strchr(s, ']');
            if (close == NULL || close[1] != '\0') {
                rc = tide_error_set(err, TIDE_EINVAL,
                                    "credentials: %s line %u is malformed (expected [section])",
                                    path, line_no);
                break;
            }
            section = trim(s + 1, close);
            have_section = true;
            after_key = false;
            rc = visit(ud, section, NULL, NULL, err);
        } else {
            char *eq = strchr(s, '=');
            if (eq == NULL || eq == s || !have_section) {
                rc = tide_error_set(err, TIDE_EINVAL,
                                    "credentials: %s line %u is malformed (expected key = value%s)",
                                    path, line_no, have_section ? "" : " inside a [section]");
                break;
            }
            char *key = trim(s, eq);
            char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
            after_key = *value == '\0'; /* an empty value opens a nested block */
            rc = visit(ud, section, key, value, err);
        }
        line = next;
    }
    /* trim() wrote NULs into data: wipe by size, not strlen */
    OPENSSL_cleanse(data, size);
    free(data);
    return rc;
}
