/*
 * credentials.h - the AWS credentials chain and region lookup.
 *
 * Order, as the AWS SDKs: explicit options, then the environment
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), then the
 * profile (options.profile, else AWS_PROFILE, else "default") in the shared
 * credentials file (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials)
 * and then in the config file (AWS_CONFIG_FILE, else ~/.aws/config).
 *
 * Not done yet (later providers of the usual chain): container credentials
 * (AWS_CONTAINER_CREDENTIALS_*), EC2 instance metadata (IMDSv2), web identity
 * (AWS_WEB_IDENTITY_TOKEN_FILE), IAM Identity Center (SSO), credential_process,
 * and role_arn/source_profile assumption. They need network or process I/O
 * and belong to the engine, not to this pure part (only files are read here).
 */
#ifndef TIDE_CREDENTIALS_H
#define TIDE_CREDENTIALS_H

#include <stdbool.h>

#include "error.h"

/* Every pointer is borrowed for the call; NULL means "not given". */
struct tide_credentials_options {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;
    const char *region;
    const char *profile;           /* else AWS_PROFILE, else "default" */
    const char *credentials_file;  /* else AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials */
    const char *config_file;       /* else AWS_CONFIG_FILE, else ~/.aws/config */
};

/* Resolved credentials; strings are heap-allocated and owned by the struct,
 * freed (and wiped) by tide_credentials_clear. */
struct tide_credentials {
    char *access_key_id;
    char *secret_access_key;
    char *session_token;     /* NULL when there is none */
    const char *source;      /* static: "explicit", "environment",
                                "credentials-file" or "config-file" */
};

/* Fills out from the first source of the chain that has both a key id and
 * a secret. Returns 0; TIDE_ENOTFOUND when no source has credentials (the
 * message lists the sources tried); TIDE_EINVAL for a malformed file (the
 * message names the file and line only) or half-given explicit options;
 * TIDE_EIO for an unreadable file; TIDE_ENOMEM. On failure out is cleared.
 * Messages never contain secrets. */
int tide_credentials_resolve(const struct tide_credentials_options *opts,
                             struct tide_credentials *out, struct tide_error *err);

/* Wipes and frees the strings of c; c may be zeroed or already cleared. */
void tide_credentials_clear(struct tide_credentials *c);

/* Region from options.region, AWS_REGION, AWS_DEFAULT_REGION, then the
 * profile's `region` in the config file. Returns 0 and a heap string in
 * *out (caller frees), or TIDE_ENOTFOUND / TIDE_EINVAL / TIDE_EIO /
 * TIDE_ENOMEM with *out NULL. */
int tide_region_resolve(const struct tide_credentials_options *opts, char **out,
                        struct tide_error *err);

/* Called for each `[section]` (key and value NULL) and each `key = value`
 * of the section last opened. Strings are borrowed for the call (the file's
 * text is wiped afterwards). Returns 0, or an error code (with err filled)
 * that stops the read. */
typedef int (*tide_aws_ini_visit)(void *ud, const char *section, const char *key,
                                  const char *value, struct tide_error *err);

/* Reads one of the shared files (INI, as above) and calls visit for what it
 * holds. Returns 0 (also for an absent file: *exists false), TIDE_EINVAL
 * for a malformed line (the message names file and line, never a value),
 * TIDE_EIO, TIDE_ENOMEM, or visit's code. */
int tide_aws_ini_read(const char *path, tide_aws_ini_visit visit, void *ud, bool *exists,
                      struct tide_error *err);

#endif
