/*
 * writer.h - the store's writer thread: group commit off the main thread.
 *
 * The main thread (the tide process's Lua) queues appends with
 * tide_store_writer_add as its commands decide them; the writer thread
 * runs them in an open write transaction (BEGIN IMMEDIATE on the first,
 * then tide_store_apply each), while the main thread goes on deciding. A
 * group begins once its COMMIT is asked or WAKE_BATCH appends wait (so
 * that tide_store_writer_run_here can still take a lone append), then
 * takes the appends as they come. tide_store_writer_close_group asks it to COMMIT once every
 * append queued so far is in (the group's leader calls it after one turn of
 * the scheduler); a group also commits when it holds group_max appends.
 * When a group's transaction ends, its appends' outcomes are final (if
 * BEGIN or COMMIT failed, or SQLite ended the transaction, every append of
 * the group gets that failure: none is reported written unless COMMIT
 * succeeded); they move to the done list, and the eventfd becomes
 * readable. tide_store_writer_take hands them back.
 *
 * The connection: the writer uses it only between tide_store_writer_add
 * and the end of that group. Before any other use of the store the main
 * thread (the binding, lua_store.c, which reads events and snapshots on a
 * second connection instead) calls tide_store_writer_quiesce, which commits the open group at
 * once and waits until the writer is idle (a few appends' time), so that a
 * read never sees an uncommitted append; and tide_store_writer_main_tx(w,
 * 1) while the caller holds its own transaction (db:begin ... db:commit):
 * the writer waits for it to end before starting the next group.
 *
 * The struct tide_store_append items are the caller's: it keeps them (and
 * what they point to) alive until they come back from take.
 */
#ifndef TIDE_SQLITE_WRITER_H
#define TIDE_SQLITE_WRITER_H

#include "store.h"

struct tide_store_writer;

/* Starts a writer thread for s (which it borrows until delete). *out is a
 * new writer the caller owns. @retval 0 ok; TIDE_ENOMEM, TIDE_EIO (no
 * thread or eventfd: the message says why). */
int tide_store_writer_new(struct tide_store_writer **out, struct tide_store *s, int group_max,
                          struct tide_error *err);

/* A descriptor that is readable while finished appends wait to be taken
 * (an eventfd, non-blocking). */
int tide_store_writer_fd(const struct tide_store_writer *w);

/* Queues a (takes it until take returns it); returns its sequence number
 * (from 1). */
uint64_t tide_store_writer_add(struct tide_store_writer *w, struct tide_store_append *a);

/* Asks for a COMMIT once every append queued so far is applied. */
void tide_store_writer_close_group(struct tide_store_writer *w);

/* Closes the group by running it on the calling thread when that is the
 * cheaper way: the writer idle (no group open, nothing being applied, no
 * caller's transaction) and at most `max` appends queued. The group runs
 * as the writer would run it (same transaction, same outcomes, then the
 * done list and the eventfd), without the two wake-ups of handing it
 * over: for a caller with nothing else to do meanwhile (one command at a
 * time). Returns 1 when it ran the group here, else 0 (nothing done:
 * call tide_store_writer_close_group). */
int tide_store_writer_run_here(struct tide_store_writer *w, int max);

/* Commits the open group now and waits until the writer no longer uses the
 * connection (nothing queued, no transaction open). */
void tide_store_writer_quiesce(struct tide_store_writer *w);

/* on: the caller holds its own transaction on the connection; the writer
 * starts no group until it is called again with 0. */
void tide_store_writer_main_tx(struct tide_store_writer *w, int on);

/* The appends whose outcome is final, in queue order (a list linked by
 * ->next; NULL when none), and clears the eventfd. stats (may be NULL)
 * gets {transactions, largest group} so far. */
struct tide_store_append *tide_store_writer_take(struct tide_store_writer *w, int64_t stats[2]);

/* Stops the thread: commits the closed groups; an open group (not yet
 * closed by tide_store_writer_close_group) is rolled back, its appends
 * failing with `why`. Then joins the thread and frees w; the appends not
 * yet taken are lost to the caller unless taken before: call
 * tide_store_writer_stop first, then take, then delete. */
void tide_store_writer_stop(struct tide_store_writer *w, const char *why);
void tide_store_writer_delete(struct tide_store_writer *w);

#endif
