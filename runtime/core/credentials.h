/*
 * credentials.h - reading the shared AWS files for the credentials chain.
 *
 * The chain itself (explicit options, the environment, assume-role, web
 * identity, SSO, the shared files, credential_process, container
 * credentials, IMDSv2) is lua/tide/credentials/, which reads the files
 * through this (core.aws_ini) and does its network I/O through the host's
 * transport.
 */
#ifndef TIDE_CREDENTIALS_H
#define TIDE_CREDENTIALS_H

#include <stdbool.h>

#include "error.h"

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
