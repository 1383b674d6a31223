/*
 * store.h - tide's embedded event store: one SQLite file, no Lua.
 *
 * The schema is the one of docs/data-model.md:
 *
 *   events(position INTEGER PRIMARY KEY, stream TEXT, version INTEGER,
 *          type TEXT, data TEXT, meta TEXT, UNIQUE (stream, version))
 *   snapshots(stream TEXT PRIMARY KEY, version INTEGER, state TEXT, meta TEXT)
 *
 * PRAGMA user_version holds TIDE_STORE_SCHEMA_VERSION and application_id
 * TIDE_STORE_APPLICATION_ID once tide_store_init() created the schema; a
 * file with another application id, or a version above this one, is
 * refused. Version 1 (event data and read-model items as AttributeValue
 * JSON) is read by the C layer as it is and made 2 (plain JSON) by the Lua
 * store on open (lua/tide/store/sqlite.lua, migrate).
 *
 * Durability: the file is in WAL mode with synchronous=NORMAL by default. In
 * WAL mode NORMAL fsyncs only at checkpoints, so a commit survives a crash
 * of the process (the WAL is in the OS's page cache), and a power loss or
 * OS crash can lose only the last transactions before the crash, never
 * corrupt the file. synchronous=FULL (TIDE_STORE_SYNC_FULL) fsyncs the WAL
 * at every commit: no committed transaction is lost, at the price of one
 * fsync per transaction (group commit shares it between appends).
 *
 * Concurrency: write transactions start with BEGIN IMMEDIATE, which takes
 * the write lock up front, so two connections never deadlock upgrading a
 * read lock; a writer waits for the lock up to the busy timeout, then gets
 * TIDE_EBUSY (retryable). Readers never wait for writers (WAL).
 *
 * A struct tide_store is one connection, for one thread at a time.
 *
 * Every fallible function returns 0 (or the documented positive value) on
 * success, or a negative TIDE_E* code and fills err (may be NULL) with a
 * message naming the file, the stream and SQLite's own message.
 */
#ifndef TIDE_SQLITE_STORE_H
#define TIDE_SQLITE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The store's error codes (TIDE_ECONFLICT, TIDE_EBUSY, TIDE_ESTORE,
 * TIDE_ESCHEMA) are in runtime/core/error.h with the others. */

#define TIDE_STORE_SCHEMA_VERSION 2
#define TIDE_STORE_APPLICATION_ID 0x74696465 /* "tide" */
#define TIDE_STORE_BUSY_TIMEOUT_MS 10000

enum tide_store_sync {
    TIDE_STORE_SYNC_NORMAL = 0,
    TIDE_STORE_SYNC_FULL = 1,
};

struct tide_store_options {
    int busy_timeout_ms;              /* >= 0; default TIDE_STORE_BUSY_TIMEOUT_MS */
    enum tide_store_sync synchronous; /* default TIDE_STORE_SYNC_NORMAL */
};

/* One event. Strings are not NUL-terminated in general (they may hold NUL
 * bytes): use the lengths. data/meta are NULL for SQL NULL. */
struct tide_store_event {
    int64_t position; /* set by reads; ignored by tide_store_insert_event */
    const char *stream;
    size_t stream_len;
    int64_t version;
    const char *type;
    size_t type_len;
    const char *data;
    size_t data_len;
    const char *meta;
    size_t meta_len;
};

struct tide_store_snapshot {
    int64_t version;
    const char *state; /* NULL for SQL NULL */
    size_t state_len;
    const char *meta; /* NULL for SQL NULL */
    size_t meta_len;
};

struct tide_store;

/* Fills opts with the defaults. */
void tide_store_options_init(struct tide_store_options *opts);

/* Opens (creating it if missing) the store file at path, in WAL mode with
 * the given options (NULL: defaults), and checks that it is not a foreign
 * database or a newer tide schema. Does not create the schema: see
 * tide_store_init. On success *out is a new store the caller owns (free it
 * with tide_store_close).
 * @retval 0 ok; TIDE_EBUSY, TIDE_ESTORE (cannot open: the message names the
 * path and the reason), TIDE_ESCHEMA, TIDE_ENOMEM on error. */
int tide_store_open(struct tide_store **out, const char *path,
                    const struct tide_store_options *opts, struct tide_error *err);

/* Finalizes every statement and closes the file (rolling back an open
 * transaction). s may be NULL. */
void tide_store_close(struct tide_store *s);

/* The path given to tide_store_open; borrowed for the store's lifetime. */
const char *tide_store_path(const struct tide_store *s);

/* Creates the schema if missing, in its own write transaction (so several
 * processes may init the same file at once). Must not be called inside a
 * transaction. @retval 0 ok; TIDE_EBUSY, TIDE_ESTORE, TIDE_ESCHEMA. */
int tide_store_init(struct tide_store *s, struct tide_error *err);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Rollback outside a transaction is a
 * no-op. If COMMIT fails, the transaction is still open: roll it back.
 * @retval 0 ok; TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_begin(struct tide_store *s, struct tide_error *err);
int tide_store_commit(struct tide_store *s, struct tide_error *err);
int tide_store_rollback(struct tide_store *s, struct tide_error *err);

/* SAVEPOINT / RELEASE / ROLLBACK TO of one savepoint, for one append inside
 * a transaction (not nested). rollback_to leaves the savepoint open: release
 * it after. @retval 0 ok; TIDE_ESTORE. */
int tide_store_savepoint(struct tide_store *s, struct tide_error *err);
int tide_store_release(struct tide_store *s, struct tide_error *err);
int tide_store_rollback_to(struct tide_store *s, struct tide_error *err);

/* 1 when a transaction is open on s, else 0. SQLite ends a transaction by
 * itself after some errors (I/O, disk full): check this after a failure. */
int tide_store_in_transaction(const struct tide_store *s);

/* The highest version of stream, 0 when it has no event.
 * @retval 0 ok; TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_max_version(struct tide_store *s, const char *stream, size_t stream_len,
                           int64_t *out, struct tide_error *err);

/* Inserts one event (ev->position is ignored; the store assigns it).
 * @retval 0 ok; TIDE_ECONFLICT when (stream, version) exists; TIDE_EBUSY,
 * TIDE_ESTORE. */
int tide_store_insert_event(struct tide_store *s, const struct tide_store_event *ev,
                            struct tide_error *err);

/* One append of a group (tide_store_append_group, the writer thread of
 * writer.h): events[0..nevents-1] (their stream and version are ignored)
 * after version expected of stream. Or, with snapshot set, a
 * tide_store_put_snapshot of stream at version `expected` with state and
 * meta. Every pointer is borrowed until the outcome is set. */
struct tide_store_append {
    const char *stream;
    size_t stream_len;
    int64_t expected;
    /* the caller knows the stream has reached version `expected` (this
     * process saw it committed; versions are never removed): then the
     * (stream, version) UNIQUE constraint alone decides the condition, and
     * the version is read only when an insert meets it */
    int reached;
    const struct tide_store_event *events;
    size_t nevents;
    int snapshot;
    const char *state, *meta; /* snapshot only; NULL for SQL NULL */
    size_t state_len, meta_len;
    /* the outcome */
    int code;        /* 0, or the TIDE_E* of the failure */
    int64_t last;    /* code 0: the stream's last version now */
    int64_t current; /* a Conflict found by the version check: the stream's
                      * version (the message is then NULL); else -1 */
    char *message;   /* a failure's message (malloc'd; the caller frees it), or NULL */
    /* for the writer's queues */
    uint64_t seq;
    int anchor; /* the Lua binding's reference to the item it came from */
    struct tide_store_append *next;
};

/* Sets a's outcome to the failure code/message (a copy of message). */
void tide_store_append_fail(struct tide_store_append *a, int code, const char *message);

/* Runs one append (or snapshot) inside the open write transaction: checks
 * that the stream is at a->expected (else a Conflict with a->current;
 * with a->reached, by inserting: see struct tide_store_append),
 * inserts its events (several in a savepoint, so that a failure keeps none
 * of them) and sets a's outcome.
 * @retval 0 a's outcome is set (success or its own failure); < 0 (err
 * filled) when the transaction itself is gone (SQLite ended it after an
 * I/O error): the whole group fails. */
int tide_store_apply(struct tide_store *s, struct tide_store_append *a, struct tide_error *err);

/* Start a read: the events of stream with version > after_version in
 * ascending version order (load), or every event with position >
 * after_position in position order, at most limit of them (read_all).
 * Fetch the rows with tide_store_next. @retval 0 ok; TIDE_ESTORE. */
int tide_store_load(struct tide_store *s, const char *stream, size_t stream_len,
                    int64_t after_version, struct tide_error *err);
int tide_store_read_all(struct tide_store *s, int64_t after_position, int64_t limit,
                        struct tide_error *err);

/* The next row of the current read into *ev; its strings are borrowed until
 * the next call on s. The read ends (its statement is reset) when this
 * returns 0 or an error, on tide_store_end_read, and on any other call on s.
 * @retval 1 a row; 0 no more rows; TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_next(struct tide_store *s, struct tide_store_event *ev, struct tide_error *err);

/* Ends the current read, if any (a read left open keeps SQLite's read
 * snapshot alive). */
void tide_store_end_read(struct tide_store *s);

/* The snapshot of stream into *out; its strings are borrowed until the next
 * call on s (call tide_store_end_read when done with them).
 * @retval 1 found; 0 none; TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_get_snapshot(struct tide_store *s, const char *stream, size_t stream_len,
                            struct tide_store_snapshot *out, struct tide_error *err);

/* Stores a snapshot of stream unless the stored one has a higher version
 * (an equal version replaces it, so a re-snapshot by a newer handler at the
 * same version is kept). state/meta may be NULL (SQL NULL).
 * @retval 0 ok; TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_put_snapshot(struct tide_store *s, const char *stream, size_t stream_len,
                            int64_t version, const char *state, size_t state_len,
                            const char *meta, size_t meta_len, struct tide_error *err);

/* ---- caller statements (read models, positions, checkpoints) ---------------
 *
 * The projection backend (lua/tide/projection/sqlite.lua) keeps its tables
 * in the same file and runs its own SQL through these. Each distinct SQL
 * text is prepared once and cached until tide_store_close (at most
 * TIDE_STORE_USER_STMTS of them; beyond that the oldest is finalized). */

#define TIDE_STORE_USER_STMTS 64

enum tide_store_value_type {
    TIDE_SV_NULL = 0,
    TIDE_SV_INT = 1,
    TIDE_SV_REAL = 2,
    TIDE_SV_TEXT = 3,
};

/* One bound parameter or one column. Text is not NUL-terminated in
 * general; a column's text is borrowed until the next call on the store. */
struct tide_store_value {
    enum tide_store_value_type type;
    int64_t i;
    double d;
    const char *p;
    size_t len;
};

/* Runs sql (one or more statements, no parameters, no rows), e.g. DDL.
 * @retval 0 ok; TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_exec(struct tide_store *s, const char *sql, struct tide_error *err);

/* Starts one statement of sql with params[0..n-1] bound to ?1..?n (their
 * text must stay valid until the read ends); fetch its rows with
 * tide_store_query_next, which must be called at least once (a statement
 * that writes runs on the first call). @retval 0 ok; TIDE_EINVAL (more
 * parameters than the statement has), TIDE_ESTORE (cannot prepare). */
int tide_store_query(struct tide_store *s, const char *sql, size_t sql_len,
                     const struct tide_store_value *params, int n, struct tide_error *err);

/* The next row of the current query: up to max columns into cols, their
 * number into *ncols. The read ends when this returns 0 or an error.
 * @retval 1 a row; 0 done; TIDE_ECONFLICT (a UNIQUE or PRIMARY KEY
 * constraint failed), TIDE_EBUSY, TIDE_ESTORE. */
int tide_store_query_next(struct tide_store *s, struct tide_store_value *cols, int max, int *ncols,
                          struct tide_error *err);

/* Rows changed by the last INSERT, UPDATE or DELETE on s. */
int64_t tide_store_changes(struct tide_store *s);

/* A short stable name for a code, including the store's ("ECONFLICT"). */
const char *tide_store_error_name(int code);

#endif
