/*
 * signals.c - blocked signals read through a signalfd (see signals.h): the
 * one place that sets a signalfd up and gives the signal mask back.
 */
#include "signals.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

struct tide_signals {
    int fd;
    sigset_t added; /* the signals this object blocked (not blocked before) */
};

struct tide_signals *tide_signals_new(const int *signos, int n, struct tide_error *err)
{
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < n; i++) {
        if (sigaddset(&set, signos[i]) != 0) {
            tide_error_set(err, TIDE_EINVAL, "signals: %d is not a signal number", signos[i]);
            return NULL;
        }
    }
    struct tide_signals *s = malloc(sizeof(*s));
    if (s == NULL) {
        tide_error_set(err, TIDE_ENOMEM, "signals: out of memory");
        return NULL;
    }
    sigset_t previous;
    int rc = pthread_sigmask(SIG_BLOCK, &set, &previous);
    if (rc != 0) {
        tide_error_set(err, TIDE_EIO, "signals: pthread_sigmask: %s", strerror(rc));
        free(s);
        return NULL;
    }
    sigemptyset(&s->added);
    for (int i = 0; i < n; i++)
        if (!sigismember(&previous, signos[i]))
            sigaddset(&s->added, signos[i]);
    s->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->fd < 0) {
        tide_error_set(err, TIDE_EIO, "signals: signalfd: %s", strerror(errno));
        pthread_sigmask(SIG_UNBLOCK, &s->added, NULL);
        free(s);
        return NULL;
    }
    return s;
}

void tide_signals_delete(struct tide_signals *s)
{
    if (s == NULL)
        return;
    close(s->fd);
    /* only what this object blocked: restoring the whole previous mask
     * would unblock the signals of another object created since */
    pthread_sigmask(SIG_UNBLOCK, &s->added, NULL);
    free(s);
}

int tide_signals_fd(const struct tide_signals *s)
{
    return s->fd;
}

int tide_signals_next(struct tide_signals *s, int *signo, struct tide_error *err)
{
    struct signalfd_siginfo info;
    ssize_t got;
    do {
        got = read(s->fd, &info, sizeof(info));
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return tide_error_set(err, TIDE_EIO, "signals: read: %s", strerror(errno));
    }
    if (got != (ssize_t)sizeof(info))
        return tide_error_set(err, TIDE_EIO, "signals: short read from signalfd");
    *signo = (int)info.ssi_signo;
    return 1;
}
