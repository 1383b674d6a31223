/*
 * writer.c - the store's writer thread (see writer.h).
 *
 * Every field below the mutex is shared; the connection is the writer's
 * while `active` is set or a group is open, the main thread's otherwise
 * (tide_store_writer_quiesce waits for that).
 */
#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Queued appends that wake the writer (see tide_store_writer_add). */
#define WAKE_BATCH 32

struct list {
    struct tide_store_append *head, *tail;
};

struct tide_store_writer {
    struct tide_store *s;
    int group_max;
    int efd;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work; /* the writer waits for work */
    pthread_cond_t idle; /* quiesce waits for the writer */
    struct list queue;   /* queued, not yet applied */
    struct list tx;      /* applied in the open group */
    struct list done;    /* outcome final, not yet taken */
    int queued;          /* appends in queue */
    int tx_open, tx_failed, tx_n, active, main_tx, stop;
    int here; /* the calling thread runs a group (tide_store_writer_run_here) */
    struct tide_error tx_err;
    uint64_t seq, tx_last, close_upto;
    int64_t transactions, largest;
    char why[256];
};

static void push(struct list *l, struct tide_store_append *a)
{
    a->next = NULL;
    if (l->tail != NULL)
        l->tail->next = a;
    else
        l->head = a;
    l->tail = a;
}

static void splice(struct list *to, struct list *from)
{
    if (from->head == NULL)
        return;
    if (to->tail != NULL)
        to->tail->next = from->head;
    else
        to->head = from->head;
    to->tail = from->tail;
    from->head = from->tail = NULL;
}

static void notify(struct tide_store_writer *w)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(w->efd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

/* Ends the open group (mu held; released while the connection works):
 * commit = 1 commits it, else rolls it back with w->why. */
static void end_group(struct tide_store_writer *w, int commit)
{
    struct tide_error e;
    tide_error_clear(&e);
    int failed = w->tx_failed;
    if (failed)
        e = w->tx_err;
    w->active = 1;
    pthread_mutex_unlock(&w->mu);
    if (!commit) {
        tide_store_rollback(w->s, NULL);
        failed = 1;
        tide_error_set(&e, TIDE_ESTORE, "%s", w->why);
    } else if (!failed) {
        if (tide_store_commit(w->s, &e) < 0) {
            tide_store_rollback(w->s, NULL);
            failed = 1;
        }
    } else {
        tide_store_rollback(w->s, NULL); /* a no-op unless BEGIN left one open */
    }
    if (failed) {
        for (struct tide_store_append *a = w->tx.head; a != NULL; a = a->next)
            tide_store_append_fail(a, e.code, e.message);
    }
    pthread_mutex_lock(&w->mu);
    w->transactions++;
    if (w->tx_n > w->largest)
        w->largest = w->tx_n;
    splice(&w->done, &w->tx);
    w->tx_open = w->tx_failed = w->tx_n = w->active = 0;
    notify(w);
    pthread_cond_broadcast(&w->idle);
}

/* Applies the first queued append (mu held; released meanwhile). */
static void apply_next(struct tide_store_writer *w)
{
    struct tide_store_append *a = w->queue.head;
    w->queue.head = a->next;
    w->queued--;
    if (w->queue.head == NULL)
        w->queue.tail = NULL;
    int begin = !w->tx_open;
    if (begin) {
        w->tx_open = 1;
        w->tx_failed = 0;
    }
    int failed = w->tx_failed;
    w->active = 1;
    pthread_mutex_unlock(&w->mu);
    struct tide_error e;
    tide_error_clear(&e);
    int rc = 0;
    if (begin)
        rc = tide_store_begin(w->s, &e);
    if (rc == 0 && !failed)
        rc = tide_store_apply(w->s, a, &e);
    pthread_mutex_lock(&w->mu);
    if (rc < 0) {
        w->tx_failed = 1;
        w->tx_err = e;
    }
    push(&w->tx, a);
    w->tx_n++;
    w->tx_last = a->seq;
    w->active = 0;
}

static void *run(void *arg)
{
    struct tide_store_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->here) {
            /* the group is the calling thread's until it ends */
            pthread_cond_wait(&w->work, &w->mu);
            continue;
        }
        struct tide_store_append *head = w->queue.head;
        int closed = head == NULL || head->seq > w->close_upto;
        if (w->tx_open && (w->tx_n >= w->group_max || (w->tx_last <= w->close_upto && closed))) {
            end_group(w, 1);
        } else if (w->stop && closed) {
            if (w->tx_open) {
                end_group(w, 0);
            } else if (head != NULL) {
                /* queued after the last close: never begun */
                for (struct tide_store_append *a = head; a != NULL; a = a->next)
                    tide_store_append_fail(a, TIDE_ESTORE, w->why);
                splice(&w->done, &w->queue);
                w->queued = 0;
                notify(w);
            } else {
                break;
            }
        } else if (head != NULL && (w->tx_open || (!w->main_tx && (!closed || w->queued >= WAKE_BATCH)))) {
            /* a new group starts when asked to commit or WAKE_BATCH appends
             * wait, not at a lone append that tide_store_writer_run_here
             * may still run on the caller's thread */
            apply_next(w);
        } else {
            pthread_cond_broadcast(&w->idle);
            pthread_cond_wait(&w->work, &w->mu);
        }
    }
    pthread_cond_broadcast(&w->idle);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int tide_store_writer_new(struct tide_store_writer **out, struct tide_store *s, int group_max,
                          struct tide_error *err)
{
    *out = NULL;
    struct tide_store_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "%s: out of memory", tide_store_path(s));
    w->s = s;
    w->group_max = group_max < 1 ? 1 : group_max;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        int e = errno;
        free(w);
        return tide_error_set(err, TIDE_EIO, "%s: eventfd: %s", tide_store_path(s), strerror(e));
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->idle, NULL);
    int rc = pthread_create(&w->thread, NULL, run, w);
    if (rc != 0) {
        close(w->efd);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->work);
        pthread_cond_destroy(&w->idle);
        free(w);
        return tide_error_set(err, TIDE_EIO, "%s: cannot start the writer thread: %s",
                              tide_store_path(s), strerror(rc));
    }
    *out = w;
    return 0;
}

int tide_store_writer_fd(const struct tide_store_writer *w)
{
    return w->efd;
}

uint64_t tide_store_writer_add(struct tide_store_writer *w, struct tide_store_append *a)
{
    pthread_mutex_lock(&w->mu);
    a->seq = ++w->seq;
    push(&w->queue, a);
    /* the writer is woken once per WAKE_BATCH appends (and by a close),
     * not per append: a wake-up per append cost two futex calls and a
     * context switch each, more than the append itself */
    if (++w->queued >= WAKE_BATCH)
        pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    return a->seq;
}

void tide_store_writer_close_group(struct tide_store_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->close_upto = w->seq;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

int tide_store_writer_run_here(struct tide_store_writer *w, int max)
{
    pthread_mutex_lock(&w->mu);
    int here = !w->stop && !w->here && !w->tx_open && !w->active && !w->main_tx && w->queue.head != NULL &&
               w->queued <= max;
    if (here) {
        w->here = 1;
        w->close_upto = w->seq;
        while (w->queue.head != NULL && w->tx_n < w->group_max)
            apply_next(w);
        end_group(w, 1);
        w->here = 0;
        if (w->queue.head != NULL)
            pthread_cond_signal(&w->work); /* past group_max: the rest is the writer's */
    }
    pthread_mutex_unlock(&w->mu);
    return here;
}

void tide_store_writer_quiesce(struct tide_store_writer *w)
{
    pthread_mutex_lock(&w->mu);
    if (w->tx_open || w->active || (w->queue.head != NULL && !w->main_tx)) {
        w->close_upto = w->seq;
        pthread_cond_signal(&w->work);
        while (w->tx_open || w->active || (w->queue.head != NULL && !w->main_tx && !w->stop))
            pthread_cond_wait(&w->idle, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
}

void tide_store_writer_main_tx(struct tide_store_writer *w, int on)
{
    pthread_mutex_lock(&w->mu);
    w->main_tx = on;
    if (!on)
        pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
}

struct tide_store_append *tide_store_writer_take(struct tide_store_writer *w, int64_t stats[2])
{
    uint64_t n;
    while (read(w->efd, &n, sizeof(n)) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&w->mu);
    struct tide_store_append *list = w->done.head;
    w->done.head = w->done.tail = NULL;
    if (stats != NULL) {
        stats[0] = w->transactions;
        stats[1] = w->largest;
    }
    pthread_mutex_unlock(&w->mu);
    return list;
}

void tide_store_writer_stop(struct tide_store_writer *w, const char *why)
{
    pthread_mutex_lock(&w->mu);
    if (!w->stop) {
        w->stop = 1;
        w->main_tx = 0;
        snprintf(w->why, sizeof(w->why), "%s", why ? why : "the store is closed");
        pthread_cond_signal(&w->work);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        return;
    }
    pthread_mutex_unlock(&w->mu);
}

void tide_store_writer_delete(struct tide_store_writer *w)
{
    if (w == NULL)
        return;
    tide_store_writer_stop(w, NULL);
    close(w->efd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->idle);
    free(w);
}
