/*
 * signals.h - termination signals as a pollable descriptor.
 *
 * `tide run` must finish its batch, checkpoint and release its leases on
 * SIGTERM or SIGINT instead of dying mid-batch. The signals are blocked in
 * the calling thread and received through a signalfd, so the event loop
 * waits on them beside its sockets (no handler runs at an arbitrary point).
 * No Lua here (lua_signals.c is the binding). watch.c takes SIGHUP through
 * it too: this is the one place that sets up a signalfd.
 */
#ifndef TIDE_SIGNALS_H
#define TIDE_SIGNALS_H

#include "error.h"

struct tide_signals;

/* Blocks the n signals of signos in the calling thread and opens a
 * non-blocking signalfd for them. Returns the object, or NULL with err
 * filled (TIDE_EINVAL for a bad signal number, TIDE_EIO). Free with
 * tide_signals_delete(). */
struct tide_signals *tide_signals_new(const int *signos, int n, struct tide_error *err);

/* Closes the descriptor and unblocks the signals that tide_signals_new
 * blocked (those that were not blocked already), so their default actions
 * apply again. NULL is a no-op. */
void tide_signals_delete(struct tide_signals *s);

/* The descriptor to wait on (POLLIN). Owned by s. */
int tide_signals_fd(const struct tide_signals *s);

/* Reads one pending signal: returns 1 and stores its number in *signo, 0
 * when none is pending, or TIDE_EIO with err filled. */
int tide_signals_next(struct tide_signals *s, int *signo, struct tide_error *err);

#endif
