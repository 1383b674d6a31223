/*
 * watch.h - file-system and SIGHUP notifications for hot reload.
 *
 * No Lua here (lua_watch.c is the binding). Linux inotify watches folders
 * (not files: editors replace files, and a watch on the old inode would go
 * quiet) and a signalfd receives SIGHUP (signals.c). Both sit behind one pollable fd,
 * so the owner's loop waits on a single descriptor beside its sockets
 * (tide_http_poll's extra fds) and never busy-waits.
 *
 * Pull-style like http.h: when tide_watch_fd() is readable, call
 * tide_watch_next() until it returns 0. Nothing is called back.
 *
 * What an event means is left to the owner (lua/tide/reload.lua debounces
 * per file and reloads the final content once):
 *   TIDE_WATCH_WRITING  a file was created or written and may still be open
 *                       for writing (IN_CREATE, IN_MODIFY)
 *   TIDE_WATCH_CHANGED  a file's new content is complete (IN_CLOSE_WRITE,
 *                       IN_MOVED_TO)
 *   TIDE_WATCH_REMOVED  a file left the folder (IN_DELETE, IN_MOVED_FROM)
 *   TIDE_WATCH_DIR_GONE the folder itself was deleted or moved; its watch
 *                       is gone (add it again once it exists)
 *   TIDE_WATCH_OVERFLOW the kernel queue overflowed: events were lost,
 *                       rescan every folder
 *   TIDE_WATCH_SIGNAL   SIGHUP was received
 *
 * Not thread-safe: one watcher per thread.
 */
#ifndef TIDE_WATCH_H
#define TIDE_WATCH_H

#include <stdbool.h>

#include "error.h"

struct tide_watch;

enum tide_watch_kind {
    TIDE_WATCH_WRITING = 1,
    TIDE_WATCH_CHANGED,
    TIDE_WATCH_REMOVED,
    TIDE_WATCH_DIR_GONE,
    TIDE_WATCH_OVERFLOW,
    TIDE_WATCH_SIGNAL,
};

/* "writing", "changed", "removed", "dir_gone", "overflow", "signal". */
const char *tide_watch_kind_name(enum tide_watch_kind kind);

struct tide_watch_event {
    enum tide_watch_kind kind;
    int dir;          /* id from tide_watch_add(); -1 for OVERFLOW and SIGNAL */
    const char *name; /* file name inside the folder; "" when none. Borrowed
                       * until the next tide_watch_next() or delete. */
    int signo;        /* SIGNAL: the signal number */
};

/* Creates a watcher. With sighup, SIGHUP is blocked in the calling thread
 * (so its default action, terminating the process, never runs) and
 * delivered through the watcher instead (tide_signals_new);
 * tide_watch_delete() unblocks it again. Block SIGHUP before creating
 * other threads, and note that exec'd children inherit the mask.
 * Returns the watcher, or NULL with err filled (TIDE_ENOMEM, TIDE_EIO).
 * Free with tide_watch_delete(). */
struct tide_watch *tide_watch_new(bool sighup, struct tide_error *err);

/* Closes the descriptors and frees the watcher. NULL is a no-op. */
void tide_watch_delete(struct tide_watch *w);

/* The descriptor to wait on (POLLIN) for events. Owned by the watcher. */
int tide_watch_fd(const struct tide_watch *w);

/* Watches folder path (not recursively). Adding a folder already watched
 * returns its existing id. Returns 0 and stores a non-negative id in *id,
 * or TIDE_EINVAL (not a folder, missing) / TIDE_EIO with err naming path. */
int tide_watch_add(struct tide_watch *w, const char *path, int *id, struct tide_error *err);

/* Stops watching folder id. Returns 0, or TIDE_ENOTFOUND. */
int tide_watch_remove(struct tide_watch *w, int id);

/* Takes the next event without waiting. Returns 1 with *ev filled, 0 when
 * nothing is pending, or TIDE_EIO with err filled. */
int tide_watch_next(struct tide_watch *w, struct tide_watch_event *ev, struct tide_error *err);

#endif
