/*
 * watch.c - inotify on folders plus a signalfd for SIGHUP, behind one
 * epoll descriptor. See watch.h.
 */
#include "watch.h"

#include "signals.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* Room for many events per read(2); the kernel never splits one. */
#define WATCH_BUF (64 * 1024)

#define DIR_MASK                                                                           \
    (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM |   \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct tide_watch {
    int epfd;   /* what the owner polls: holds infd and sigfd */
    int infd;   /* inotify, non-blocking */
    struct tide_signals *hup; /* SIGHUP (signals.c); NULL without sighup */
    /* Events read but not handed out yet: buf[pos..len). inotify_event
     * carries an int, hence the alignment. */
    size_t pos, len;
    char buf[WATCH_BUF] __attribute__((aligned(__alignof__(struct inotify_event))));
};

const char *tide_watch_kind_name(enum tide_watch_kind kind)
{
    switch (kind) {
    case TIDE_WATCH_WRITING: return "writing";
    case TIDE_WATCH_CHANGED: return "changed";
    case TIDE_WATCH_REMOVED: return "removed";
    case TIDE_WATCH_DIR_GONE: return "dir_gone";
    case TIDE_WATCH_OVERFLOW: return "overflow";
    case TIDE_WATCH_SIGNAL: return "signal";
    }
    return "unknown";
}

static int add_to_epoll(int epfd, int fd)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

struct tide_watch *tide_watch_new(bool sighup, struct tide_error *err)
{
    struct tide_watch *w = malloc(sizeof(*w));
    if (w == NULL) {
        tide_error_set(err, TIDE_ENOMEM, "out of memory");
        return NULL;
    }
    w->epfd = w->infd = -1;
    w->hup = NULL;
    w->pos = w->len = 0;
    const char *what = "epoll_create1";
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        goto fail;
    what = "inotify_init1";
    w->infd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->infd < 0 || add_to_epoll(w->epfd, w->infd) != 0)
        goto fail;
    if (sighup) {
        static const int hup[] = {SIGHUP};
        w->hup = tide_signals_new(hup, 1, err);
        if (w->hup == NULL) {
            tide_watch_delete(w);
            return NULL;
        }
        what = "epoll_ctl(SIGHUP)";
        if (add_to_epoll(w->epfd, tide_signals_fd(w->hup)) != 0)
            goto fail;
    }
    return w;
fail:
    tide_error_set(err, errno == ENOMEM ? TIDE_ENOMEM : TIDE_EIO, "watch: %s: %s", what,
                   strerror(errno));
    tide_watch_delete(w);
    return NULL;
}

void tide_watch_delete(struct tide_watch *w)
{
    if (w == NULL)
        return;
    tide_signals_delete(w->hup);
    if (w->infd >= 0)
        close(w->infd);
    if (w->epfd >= 0)
        close(w->epfd);
    free(w);
}

int tide_watch_fd(const struct tide_watch *w)
{
    return w->epfd;
}

int tide_watch_add(struct tide_watch *w, const char *path, int *id, struct tide_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return tide_error_set(err, TIDE_EINVAL, "cannot watch %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return tide_error_set(err, TIDE_EINVAL, "cannot watch %s: not a folder", path);
    /* The same inode gives back the same descriptor: adding twice is harmless. */
    int wd = inotify_add_watch(w->infd, path, DIR_MASK);
    if (wd < 0) {
        if (errno == ENOSPC)
            return tide_error_set(err, TIDE_EIO,
                                  "cannot watch %s: the inotify watch limit is reached "
                                  "(raise fs.inotify.max_user_watches)",
                                  path);
        return tide_error_set(err, TIDE_EIO, "cannot watch %s: %s", path, strerror(errno));
    }
    *id = wd;
    return 0;
}

int tide_watch_remove(struct tide_watch *w, int id)
{
    return inotify_rm_watch(w->infd, id) == 0 ? 0 : TIDE_ENOTFOUND;
}

/* Refills buf from the inotify fd. Returns 1 when events were read, 0 when
 * none are pending, or TIDE_EIO. */
static int refill(struct tide_watch *w, struct tide_error *err)
{
    for (;;) {
        ssize_t n = read(w->infd, w->buf, sizeof(w->buf));
        if (n > 0) {
            w->pos = 0;
            w->len = (size_t)n;
            return 1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        return tide_error_set(err, TIDE_EIO, "watch: reading inotify: %s",
                              n == 0 ? "end of file" : strerror(errno));
    }
}

/* Turns one inotify event into *ev; returns 0 to skip it. */
static int translate(struct tide_watch *w, const struct inotify_event *ie, struct tide_watch_event *ev)
{
    ev->dir = ie->wd;
    ev->name = ie->len > 0 ? ie->name : "";
    ev->signo = 0;
    uint32_t m = ie->mask;
    if (m & IN_Q_OVERFLOW) {
        ev->kind = TIDE_WATCH_OVERFLOW;
        ev->dir = -1;
        return 1;
    }
    if (m & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        /* A moved folder keeps its watch (it follows the inode): drop it,
         * the owner watches a path. The IN_IGNORED that follows is skipped. */
        if (m & IN_MOVE_SELF)
            inotify_rm_watch(w->infd, ie->wd);
        ev->kind = TIDE_WATCH_DIR_GONE;
        return 1;
    }
    if (m & IN_IGNORED)
        return 0;
    if ((m & IN_ISDIR) || ie->len == 0)
        return 0; /* subfolders are not modules */
    if (m & (IN_DELETE | IN_MOVED_FROM))
        ev->kind = TIDE_WATCH_REMOVED;
    else if (m & (IN_CLOSE_WRITE | IN_MOVED_TO))
        ev->kind = TIDE_WATCH_CHANGED;
    else if (m & (IN_CREATE | IN_MODIFY))
        ev->kind = TIDE_WATCH_WRITING;
    else
        return 0;
    return 1;
}

int tide_watch_next(struct tide_watch *w, struct tide_watch_event *ev, struct tide_error *err)
{
    for (;;) {
        while (w->pos < w->len) {
            const struct inotify_event *ie = (const struct inotify_event *)(void *)(w->buf + w->pos);
            w->pos += sizeof(struct inotify_event) + ie->len;
            if (translate(w, ie, ev))
                return 1;
        }
        int rc = refill(w, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
    }
    if (w->hup != NULL) {
        int signo = 0;
        int rc = tide_signals_next(w->hup, &signo, err);
        if (rc != 1)
            return rc;
        ev->kind = TIDE_WATCH_SIGNAL;
        ev->dir = -1;
        ev->name = "";
        ev->signo = signo;
        return 1;
    }
    return 0;
}
