/*
 * credentials.c - the AWS credentials chain and region lookup (see
 * credentials.h for the order and for the providers not done yet).
 *
 * The shared files are INI: `[section]`, `key = value`, full-line comments
 * starting with '#' or ';', and indented continuation lines (nested
 * settings such as `s3 =`), which are skipped. Values are kept verbatim
 * after trimming: no inline comments, since '#' may be part of a token.
 */
#include "credentials.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* The keys looked up in one profile section. */
enum { K_KEY_ID, K_SECRET, K_TOKEN, K_REGION, K_COUNT };
static const char *const KEY_NAMES[K_COUNT] = {
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region",
};

struct profile_values {
    bool section_found;
    char *v[K_COUNT];
};

/* A short account of the sources tried, for the "not found" message. */
struct tried {
    char text[400];
    size_t len;
};

static void tried_add(struct tried *t, const char *fmt, const char *a, const char *b)
{
    if (t->len >= sizeof(t->text) - 1)
        return;
    int n = snprintf(t->text + t->len, sizeof(t->text) - t->len, fmt, a, b);
    if (n > 0)
        t->len += (size_t)n < sizeof(t->text) - t->len ? (size_t)n
                                                       : sizeof(t->text) - 1 - t->len;
}

static void wipe_free(char *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static void profile_values_clear(struct profile_values *pv)
{
    for (int i = 0; i < K_COUNT; i++) {
        wipe_free(pv->v[i]);
        pv->v[i] = NULL;
    }
    pv->section_found = false;
}

/* Environment variable, with "set but empty" read as unset (as the SDKs). */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static const char *given(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

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

/* Path of a shared file: the option, else the variable, else ~/.aws/NAME.
 * Returns 0 with *out heap-allocated, or NULL when there is no HOME. */
static int file_path(const char *opt, const char *var, const char *name, char **out,
                     struct tide_error *err)
{
    const char *p = given(opt) ? opt : env(var);
    *out = NULL;
    if (p != NULL) {
        *out = strdup(p);
    } else {
        const char *home = env("HOME");
        if (home == NULL)
            return 0;
        size_t n = strlen(home) + strlen(name) + 7;
        *out = malloc(n);
        if (*out != NULL)
            snprintf(*out, n, "%s/.aws/%s", home, name);
    }
    if (*out == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "credentials: out of memory");
    return 0;
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

/* Does the section header text (inside the brackets, trimmed) name the
 * profile? In the config file, profiles are `[profile NAME]` except the
 * default one, which may also be `[default]`. */
static bool section_matches(const char *sec, const char *profile, bool config_file)
{
    if (!config_file)
        return strcmp(sec, profile) == 0;
    if (strncmp(sec, "profile", 7) == 0 && is_blank(sec[7])) {
        sec += 7;
        while (is_blank(*sec))
            sec++;
        return strcmp(sec, profile) == 0;
    }
    return strcmp(profile, "default") == 0 && strcmp(sec, "default") == 0;
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

struct profile_read_state {
    const char *profile;
    bool config_file;
    bool in_section;
    struct profile_values *pv;
};

static int profile_visit(void *ud, const char *section, const char *key, const char *value,
                         struct tide_error *err)
{
    struct profile_read_state *st = ud;
    if (key == NULL) {
        st->in_section = section_matches(section, st->profile, st->config_file);
        if (st->in_section)
            st->pv->section_found = true;
        return 0;
    }
    for (int i = 0; st->in_section && i < K_COUNT; i++) {
        if (strcmp(key, KEY_NAMES[i]) != 0)
            continue;
        char *copy = strdup(value);
        if (copy == NULL)
            return tide_error_set(err, TIDE_ENOMEM, "credentials: out of memory");
        wipe_free(st->pv->v[i]); /* a later assignment wins */
        st->pv->v[i] = copy;
    }
    return 0;
}

/* Parses an INI file and collects the profile's keys into pv. Returns 0
 * (also when the file is absent: then pv->section_found stays false and
 * *exists is false), TIDE_EINVAL for a malformed line, TIDE_EIO, TIDE_ENOMEM. */
static int profile_read(const char *path, const char *profile, bool config_file,
                        struct profile_values *pv, bool *exists, struct tide_error *err)
{
    struct profile_read_state st = {profile, config_file, false, pv};
    return tide_aws_ini_read(path, profile_visit, &st, exists, err);
}

static const char *profile_name(const struct tide_credentials_options *opts)
{
    if (given(opts->profile))
        return opts->profile;
    const char *p = env("AWS_PROFILE");
    return p ? p : "default";
}

static int set_creds(struct tide_credentials *out, const char *id, const char *secret,
                     const char *token, const char *source, struct tide_error *err)
{
    out->access_key_id = strdup(id);
    out->secret_access_key = strdup(secret);
    out->session_token = given(token) ? strdup(token) : NULL;
    out->source = source;
    if (out->access_key_id == NULL || out->secret_access_key == NULL
        || (given(token) && out->session_token == NULL)) {
        tide_credentials_clear(out);
        return tide_error_set(err, TIDE_ENOMEM, "credentials: out of memory");
    }
    return 0;
}

/* Takes the strings of pv into out when it has both key id and secret. */
static bool take_profile(struct profile_values *pv, struct tide_credentials *out,
                         const char *source)
{
    if (pv->v[K_KEY_ID] == NULL || pv->v[K_SECRET] == NULL
        || pv->v[K_KEY_ID][0] == '\0' || pv->v[K_SECRET][0] == '\0')
        return false;
    out->access_key_id = pv->v[K_KEY_ID];
    out->secret_access_key = pv->v[K_SECRET];
    out->session_token = given(pv->v[K_TOKEN]) ? pv->v[K_TOKEN] : NULL;
    if (out->session_token == NULL)
        wipe_free(pv->v[K_TOKEN]);
    out->source = source;
    pv->v[K_KEY_ID] = pv->v[K_SECRET] = pv->v[K_TOKEN] = NULL;
    return true;
}

/* Looks the profile up in one file; *found set when out was filled. */
static int from_file(const char *path, const char *profile, bool config_file,
                     struct tide_credentials *out, bool *found, struct tried *tried,
                     struct tide_error *err)
{
    struct profile_values pv = {0};
    bool exists;
    *found = false;
    int rc = profile_read(path, profile, config_file, &pv, &exists, err);
    if (rc == 0) {
        if (take_profile(&pv, out, config_file ? "config-file" : "credentials-file"))
            *found = true;
        else if (!exists)
            tried_add(tried, "; %s (no such file)%s", path, "");
        else if (!pv.section_found)
            tried_add(tried, "; %s (no profile '%s')", path, profile);
        else
            tried_add(tried, "; %s (profile '%s' has no aws_access_key_id and aws_secret_access_key)",
                      path, profile);
    }
    profile_values_clear(&pv);
    return rc;
}

/* The profile from one of the shared files: the path given in opts, else
 * $var, else ~/.aws/<name> (config: the config file, whose sections are
 * [profile NAME]). Returns 0, *found saying whether it was there, or an
 * error code with err filled. */
static int from_shared_file(const char *opt, const char *var, const char *name, bool config,
                            const char *profile, struct tide_credentials *out, bool *found,
                            struct tried *tried, struct tide_error *err)
{
    char *path = NULL;
    int rc = file_path(opt, var, name, &path, err);
    if (rc == 0 && path != NULL)
        rc = from_file(path, profile, config, out, found, tried, err);
    else if (rc == 0)
        tried_add(tried, "; %s file (HOME unset)%s", config ? "config" : "shared credentials", "");
    free(path);
    return rc;
}

int tide_credentials_resolve(const struct tide_credentials_options *opts,
                             struct tide_credentials *out, struct tide_error *err)
{
    memset(out, 0, sizeof(*out));
    struct tried tried = {.len = 0};
    tried.text[0] = '\0';

    /* 1. explicit options: both or neither */
    const char *id = given(opts->access_key_id), *secret = given(opts->secret_access_key);
    if (id != NULL || secret != NULL) {
        if (id == NULL || secret == NULL)
            return tide_error_set(err, TIDE_EINVAL,
                                  "credentials: %s given without %s",
                                  id ? "access_key_id" : "secret_access_key",
                                  id ? "secret_access_key" : "access_key_id");
        return set_creds(out, id, secret, opts->session_token, "explicit", err);
    }
    tried_add(&tried, "explicit options (none given)%s%s", "", "");

    /* 2. environment */
    id = env("AWS_ACCESS_KEY_ID");
    secret = env("AWS_SECRET_ACCESS_KEY");
    if (id != NULL && secret != NULL)
        return set_creds(out, id, secret, env("AWS_SESSION_TOKEN"), "environment", err);
    if (id != NULL || secret != NULL)
        tried_add(&tried, "; environment (%s set without %s)",
                  id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                  id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    else
        tried_add(&tried, "; environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY unset)%s%s",
                  "", "");

    /* 3. the profile in the shared credentials file, then in the config file */
    const char *profile = profile_name(opts);
    bool found = false;
    int rc = from_shared_file(opts->credentials_file, "AWS_SHARED_CREDENTIALS_FILE",
                              "credentials", false, profile, out, &found, &tried, err);
    if (rc != 0 || found)
        return rc;
    rc = from_shared_file(opts->config_file, "AWS_CONFIG_FILE", "config", true, profile, out,
                          &found, &tried, err);
    if (rc != 0 || found)
        return rc;

    return tide_error_set(err, TIDE_ENOTFOUND,
                          "credentials: none found for profile '%s'; tried %s "
                          "(not supported yet: container credentials, IMDSv2, web identity, "
                          "SSO, credential_process)",
                          profile, tried.text);
}

void tide_credentials_clear(struct tide_credentials *c)
{
    wipe_free(c->access_key_id);
    wipe_free(c->secret_access_key);
    wipe_free(c->session_token);
    c->access_key_id = c->secret_access_key = c->session_token = NULL;
    c->source = NULL;
}

int tide_region_resolve(const struct tide_credentials_options *opts, char **out,
                        struct tide_error *err)
{
    *out = NULL;
    const char *r = given(opts->region);
    if (r == NULL)
        r = env("AWS_REGION");
    if (r == NULL)
        r = env("AWS_DEFAULT_REGION");
    if (r != NULL) {
        *out = strdup(r);
        return *out ? 0 : tide_error_set(err, TIDE_ENOMEM, "region: out of memory");
    }

    const char *profile = profile_name(opts);
    char *path = NULL;
    int rc = file_path(opts->config_file, "AWS_CONFIG_FILE", "config", &path, err);
    if (rc != 0)
        return rc;
    struct profile_values pv = {0};
    bool exists = false;
    if (path != NULL)
        rc = profile_read(path, profile, true, &pv, &exists, err);
    if (rc == 0 && given(pv.v[K_REGION])) {
        *out = pv.v[K_REGION];
        pv.v[K_REGION] = NULL;
    } else if (rc == 0) {
        rc = tide_error_set(err, TIDE_ENOTFOUND,
                            "region: not set; tried opts.region, AWS_REGION, AWS_DEFAULT_REGION "
                            "and region in profile '%s' of %s%s",
                            profile, path ? path : "the config file (HOME unset)",
                            path == NULL ? "" : !exists ? " (no such file)"
                            : !pv.section_found ? " (no such profile)" : " (no region key)");
    }
    profile_values_clear(&pv);
    free(path);
    return rc;
}
