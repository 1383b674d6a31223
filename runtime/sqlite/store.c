/*
 * store.c - tide's embedded event store over SQLite (see store.h).
 *
 * Statements are prepared on first use and kept (SQLITE_PREPARE_PERSISTENT)
 * until tide_store_close. At most one read (load, read_all, get_snapshot)
 * is open at a time; every entry point ends it first, since an unfinished
 * SELECT keeps its read snapshot, and a write transaction begun on a stale
 * snapshot could not take the write lock.
 */
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_MAX_VERSION,
    ST_INSERT,
    ST_LOAD,
    ST_READ_ALL,
    ST_GET_SNAPSHOT,
    ST_PUT_SNAPSHOT,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT tide_append",
    [ST_RELEASE] = "RELEASE tide_append",
    [ST_ROLLBACK_TO] = "ROLLBACK TO tide_append",
    /* rather than max(version): certain to be one step down the index */
    [ST_MAX_VERSION] = "SELECT version FROM events WHERE stream = ?1 ORDER BY version DESC LIMIT 1",
    [ST_INSERT] = "INSERT INTO events (stream, version, type, data, meta) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_LOAD] = "SELECT position, stream, version, type, data, meta FROM events"
                " WHERE stream = ?1 AND version > ?2 ORDER BY version",
    [ST_READ_ALL] = "SELECT position, stream, version, type, data, meta FROM events"
                    " WHERE position > ?1 ORDER BY position LIMIT ?2",
    [ST_GET_SNAPSHOT] = "SELECT version, state, meta FROM snapshots WHERE stream = ?1",
    [ST_PUT_SNAPSHOT] = "INSERT INTO snapshots (stream, version, state, meta) VALUES (?1, ?2, ?3, ?4)"
                        " ON CONFLICT (stream) DO UPDATE SET version = excluded.version,"
                        " state = excluded.state, meta = excluded.meta"
                        " WHERE excluded.version >= snapshots.version",
};

/* position is the rowid: a later transaction always gets higher positions
 * (one writer at a time), so a projection that read up to position P never
 * finds a new event below P. */
static const char schema_sql[] =
    "CREATE TABLE events ("
    " position INTEGER PRIMARY KEY,"
    " stream TEXT NOT NULL,"
    " version INTEGER NOT NULL CHECK (version >= 1),"
    " type TEXT NOT NULL,"
    " data TEXT,"
    " meta TEXT,"
    " UNIQUE (stream, version));"
    "CREATE TABLE snapshots ("
    " stream TEXT PRIMARY KEY,"
    " version INTEGER NOT NULL,"
    " state TEXT,"
    " meta TEXT);";

struct user_stmt {
    char *sql;
    size_t len;
    sqlite3_stmt *st;
};

struct tide_store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST_COUNT];
    sqlite3_stmt *active; /* the open read, or NULL */
    struct user_stmt user[TIDE_STORE_USER_STMTS]; /* caller statements, oldest first */
    int nuser;
};

/* Stream names in messages: at most this many bytes. */
#define STREAM_SHOWN 200
#define SHOWN(len) ((int)((len) > STREAM_SHOWN ? STREAM_SHOWN : (len)))

static int code_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TIDE_EBUSY;
    case SQLITE_NOMEM:
        return TIDE_ENOMEM;
    case SQLITE_NOTADB:
        return TIDE_ESCHEMA;
    default:
        return TIDE_ESTORE;
    }
}

/* Fills err with "<path>: <what>: <SQLite's message>[ (<errno text>)]" for
 * the failure rc of db; returns the TIDE_E* code. */
static int fail_db(sqlite3 *db, const char *path, int rc, struct tide_error *err,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail_db(sqlite3 *db, const char *path, int rc, struct tide_error *err,
                   const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int sys = db ? sqlite3_system_errno(db) : 0;
    int prim = rc & 0xff;
    if (sys != 0 && (prim == SQLITE_CANTOPEN || prim == SQLITE_IOERR || prim == SQLITE_FULL))
        return tide_error_set(err, code_of(rc), "%s: %s: %s (%s)", path, what, msg, strerror(sys));
    return tide_error_set(err, code_of(rc), "%s: %s: %s", path, what, msg);
}

#define FAIL(s, rc, err, ...) fail_db((s)->db, (s)->path, (rc), (err), __VA_ARGS__)

void tide_store_end_read(struct tide_store *s)
{
    if (s != NULL && s->active != NULL) {
        sqlite3_reset(s->active);
        s->active = NULL;
    }
}

/* The cached statement id, prepared on first use; NULL and err on failure. */
static sqlite3_stmt *stmt(struct tide_store *s, enum stmt_id id, struct tide_error *err)
{
    tide_store_end_read(s);
    if (s->st[id] == NULL) {
        int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->st[id], NULL);
        if (rc != SQLITE_OK) {
            /* "no such table" before tide_store_init is the usual cause */
            FAIL(s, rc, err, "cannot prepare \"%s\"", stmt_sql[id]);
            s->st[id] = NULL;
            return NULL;
        }
    }
    return s->st[id];
}

static int bind_text(sqlite3_stmt *st, int i, const char *p, size_t len)
{
    if (p == NULL)
        return sqlite3_bind_null(st, i);
    if (len > INT_MAX)
        return SQLITE_TOOBIG;
    /* SQLITE_STATIC: every statement is stepped and reset before returning */
    return sqlite3_bind_text(st, i, p, (int)len, SQLITE_STATIC);
}

/* Reads column i as text (NULL for SQL NULL). Returns 0, or SQLITE_NOMEM. */
static int column_text(sqlite3_stmt *st, int i, const char **p, size_t *len)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
        *p = NULL;
        *len = 0;
        return SQLITE_OK;
    }
    *p = (const char *)sqlite3_column_text(st, i);
    if (*p == NULL)
        return SQLITE_NOMEM;
    *len = (size_t)sqlite3_column_bytes(st, i);
    return SQLITE_OK;
}

/* Steps a statement that returns no row, then resets it. */
static int run_simple(struct tide_store *s, enum stmt_id id, struct tide_error *err, const char *what)
{
    sqlite3_stmt *st = stmt(s, id, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        ret = FAIL(s, rc, err, "%s", what);
    sqlite3_reset(st);
    return ret;
}

static int exec(struct tide_store *s, const char *sql, struct tide_error *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : FAIL(s, rc, err, "%.120s", sql);
}

/* Checks the file's tide schema version: *version is 0 for a file without
 * tide's schema (new, or another application's tables beside none of
 * tide's), else TIDE_STORE_SCHEMA_VERSION. */
static int check_schema(struct tide_store *s, int64_t *version, struct tide_error *err)
{
    /* one statement, so one snapshot: read apart, the three could straddle
     * another process's tide_store_init */
    static const char sql[] =
        "SELECT (SELECT user_version FROM pragma_user_version),"
        " (SELECT application_id FROM pragma_application_id),"
        " (SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        " AND name IN ('events', 'snapshots'))";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        int ret = FAIL(s, rc, err, "cannot read the schema version");
        sqlite3_finalize(st);
        return ret;
    }
    int64_t uv = sqlite3_column_int64(st, 0);
    int64_t app = sqlite3_column_int64(st, 1);
    int64_t tables = sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    if (app != 0 && app != TIDE_STORE_APPLICATION_ID)
        return tide_error_set(err, TIDE_ESCHEMA,
                              "%s: not a tide store (application_id 0x%llx belongs to another application)",
                              s->path, (unsigned long long)app);
    if (uv != 0 && app != TIDE_STORE_APPLICATION_ID)
        return tide_error_set(err, TIDE_ESCHEMA,
                              "%s: not a tide store (user_version %lld set by another application)",
                              s->path, (long long)uv);
    if (uv > TIDE_STORE_SCHEMA_VERSION)
        return tide_error_set(err, TIDE_ESCHEMA,
                              "%s: tide schema version %lld is newer than this tide's (%d)",
                              s->path, (long long)uv, TIDE_STORE_SCHEMA_VERSION);
    if (uv == 0 && tables != 0)
        return tide_error_set(err, TIDE_ESCHEMA,
                              "%s: not a tide store (it has an events or snapshots table"
                              " but no tide schema version)",
                              s->path);
    *version = uv;
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* WAL mode, synchronous, and the schema check of a newly opened file. */
static int setup(struct tide_store *s, const struct tide_store_options *o, struct tide_error *err)
{
    /* the first statement reads the header: where "file is not a database"
     * shows up */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        /* ":memory:" databases stay "memory" */
        if (mode == NULL || (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)) {
            int ret = tide_error_set(err, TIDE_ESTORE, "%s: cannot switch to WAL mode (journal mode is %s)",
                                     s->path, mode ? mode : "unknown");
            sqlite3_finalize(st);
            return ret;
        }
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        int ret = FAIL(s, rc, err, "cannot open");
        sqlite3_finalize(st);
        return ret;
    }
    sqlite3_finalize(st);
    int ret = exec(s, o->synchronous == TIDE_STORE_SYNC_FULL ? "PRAGMA synchronous=FULL"
                                                              : "PRAGMA synchronous=NORMAL", err);
    if (ret < 0)
        return ret;
    int64_t version = 0;
    return check_schema(s, &version, err);
}

void tide_store_options_init(struct tide_store_options *opts)
{
    opts->busy_timeout_ms = TIDE_STORE_BUSY_TIMEOUT_MS;
    opts->synchronous = TIDE_STORE_SYNC_NORMAL;
}

int tide_store_open(struct tide_store **out, const char *path,
                    const struct tide_store_options *opts, struct tide_error *err)
{
    *out = NULL;
    struct tide_store_options o;
    if (opts != NULL)
        o = *opts;
    else
        tide_store_options_init(&o);
    if (path == NULL || path[0] == '\0')
        return tide_error_set(err, TIDE_EINVAL, "store path is empty");
    if (o.busy_timeout_ms < 0)
        return tide_error_set(err, TIDE_EINVAL, "%s: busy timeout must be >= 0", path);
    if (o.synchronous != TIDE_STORE_SYNC_NORMAL && o.synchronous != TIDE_STORE_SYNC_FULL)
        return tide_error_set(err, TIDE_EINVAL, "%s: synchronous must be normal or full", path);

    struct tide_store *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return tide_error_set(err, TIDE_ENOMEM, "%s: out of memory", path);
    }
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int ret = 0;
    if (rc != SQLITE_OK) {
        ret = fail_db(s->db, path, rc, err, "cannot open");
        if (ret == TIDE_ESCHEMA || ret == TIDE_EBUSY)
            ret = TIDE_ESTORE;
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, o.busy_timeout_ms);

    /* SQLite's busy handler does not cover every lock of the switch to WAL
     * (a new file opened by several processes at once): retry it here, up
     * to the same timeout. */
    int64_t deadline = now_ms() + o.busy_timeout_ms;
    while ((ret = setup(s, &o, err)) == TIDE_EBUSY && now_ms() < deadline)
        sleep_ms(5);
    if (ret < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    tide_store_close(s);
    return ret;
}

void tide_store_close(struct tide_store *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    for (int i = 0; i < s->nuser; i++) {
        sqlite3_finalize(s->user[i].st);
        free(s->user[i].sql);
    }
    /* sqlite3_close_v2 rolls back an open transaction; with every statement
     * finalized it closes at once */
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

const char *tide_store_path(const struct tide_store *s)
{
    return s->path;
}

int tide_store_init(struct tide_store *s, struct tide_error *err)
{
    tide_store_end_read(s);
    if (!sqlite3_get_autocommit(s->db))
        return tide_error_set(err, TIDE_EINVAL, "%s: init inside a transaction", s->path);
    int ret = tide_store_begin(s, err);
    if (ret < 0)
        return ret;
    int64_t version = 0;
    if ((ret = check_schema(s, &version, err)) < 0)
        goto rollback;
    if (version == 0) {
        char sql[sizeof(schema_sql) + 128];
        snprintf(sql, sizeof(sql), "%sPRAGMA user_version = %d; PRAGMA application_id = %d;",
                 schema_sql, TIDE_STORE_SCHEMA_VERSION, TIDE_STORE_APPLICATION_ID);
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            ret = FAIL(s, rc, err, "cannot create the schema");
            goto rollback;
        }
    }
    if ((ret = tide_store_commit(s, err)) < 0)
        goto rollback;
    return 0;
rollback:
    tide_store_rollback(s, NULL);
    return ret;
}

int tide_store_begin(struct tide_store *s, struct tide_error *err)
{
    return run_simple(s, ST_BEGIN, err, "cannot begin a write transaction");
}

int tide_store_commit(struct tide_store *s, struct tide_error *err)
{
    return run_simple(s, ST_COMMIT, err, "cannot commit");
}

int tide_store_rollback(struct tide_store *s, struct tide_error *err)
{
    tide_store_end_read(s);
    if (sqlite3_get_autocommit(s->db))
        return 0;
    return run_simple(s, ST_ROLLBACK, err, "cannot roll back");
}

int tide_store_savepoint(struct tide_store *s, struct tide_error *err)
{
    return run_simple(s, ST_SAVEPOINT, err, "cannot open a savepoint");
}

int tide_store_release(struct tide_store *s, struct tide_error *err)
{
    return run_simple(s, ST_RELEASE, err, "cannot release a savepoint");
}

int tide_store_rollback_to(struct tide_store *s, struct tide_error *err)
{
    return run_simple(s, ST_ROLLBACK_TO, err, "cannot roll back to a savepoint");
}

int tide_store_in_transaction(const struct tide_store *s)
{
    return !sqlite3_get_autocommit(s->db);
}

int tide_store_max_version(struct tide_store *s, const char *stream, size_t stream_len,
                           int64_t *out, struct tide_error *err)
{
    sqlite3_stmt *st = stmt(s, ST_MAX_VERSION, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = bind_text(st, 1, stream, stream_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        *out = 0;
    else
        ret = FAIL(s, rc, err, "stream %.*s: cannot read its version", SHOWN(stream_len), stream);
    sqlite3_reset(st);
    return ret;
}

int tide_store_insert_event(struct tide_store *s, const struct tide_store_event *ev,
                            struct tide_error *err)
{
    sqlite3_stmt *st = stmt(s, ST_INSERT, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = bind_text(st, 1, ev->stream, ev->stream_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, ev->version);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 3, ev->type, ev->type_len);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 4, ev->data, ev->data_len);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 5, ev->meta, ev->meta_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        ret = tide_error_set(err, TIDE_ECONFLICT, "%s: stream %.*s: version %lld exists already",
                             s->path, SHOWN(ev->stream_len), ev->stream, (long long)ev->version);
    else if (rc == SQLITE_TOOBIG)
        ret = tide_error_set(err, TIDE_EINVAL, "%s: stream %.*s: event %lld is too big",
                             s->path, SHOWN(ev->stream_len), ev->stream, (long long)ev->version);
    else if (rc != SQLITE_DONE)
        ret = FAIL(s, rc, err, "stream %.*s: cannot insert version %lld", SHOWN(ev->stream_len),
                   ev->stream, (long long)ev->version);
    sqlite3_reset(st);
    return ret;
}

int tide_store_load(struct tide_store *s, const char *stream, size_t stream_len,
                    int64_t after_version, struct tide_error *err)
{
    sqlite3_stmt *st = stmt(s, ST_LOAD, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = bind_text(st, 1, stream, stream_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, after_version);
    if (rc != SQLITE_OK)
        return FAIL(s, rc, err, "stream %.*s: cannot load", SHOWN(stream_len), stream);
    s->active = st;
    return 0;
}

int tide_store_read_all(struct tide_store *s, int64_t after_position, int64_t limit,
                        struct tide_error *err)
{
    sqlite3_stmt *st = stmt(s, ST_READ_ALL, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = sqlite3_bind_int64(st, 1, after_position);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, limit);
    if (rc != SQLITE_OK)
        return FAIL(s, rc, err, "cannot read the events after position %lld", (long long)after_position);
    s->active = st;
    return 0;
}

int tide_store_next(struct tide_store *s, struct tide_store_event *ev, struct tide_error *err)
{
    sqlite3_stmt *st = s->active;
    if (st == NULL)
        return 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        ev->position = sqlite3_column_int64(st, 0);
        ev->version = sqlite3_column_int64(st, 2);
        rc = column_text(st, 1, &ev->stream, &ev->stream_len);
        if (rc == SQLITE_OK)
            rc = column_text(st, 3, &ev->type, &ev->type_len);
        if (rc == SQLITE_OK)
            rc = column_text(st, 4, &ev->data, &ev->data_len);
        if (rc == SQLITE_OK)
            rc = column_text(st, 5, &ev->meta, &ev->meta_len);
        if (rc == SQLITE_OK)
            return 1;
        tide_store_end_read(s);
        return tide_error_set(err, TIDE_ENOMEM, "%s: out of memory reading an event", s->path);
    }
    int ret = rc == SQLITE_DONE ? 0 : FAIL(s, rc, err, "cannot read events");
    tide_store_end_read(s);
    return ret;
}

int tide_store_get_snapshot(struct tide_store *s, const char *stream, size_t stream_len,
                            struct tide_store_snapshot *out, struct tide_error *err)
{
    sqlite3_stmt *st = stmt(s, ST_GET_SNAPSHOT, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = bind_text(st, 1, stream, stream_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->version = sqlite3_column_int64(st, 0);
        rc = column_text(st, 1, &out->state, &out->state_len);
        if (rc == SQLITE_OK)
            rc = column_text(st, 2, &out->meta, &out->meta_len);
        if (rc == SQLITE_OK) {
            s->active = st; /* the strings live until the read ends */
            return 1;
        }
    }
    int ret = rc == SQLITE_DONE ? 0
                                : FAIL(s, rc, err, "stream %.*s: cannot read its snapshot",
                                       SHOWN(stream_len), stream);
    sqlite3_reset(st);
    return ret;
}

int tide_store_put_snapshot(struct tide_store *s, const char *stream, size_t stream_len,
                            int64_t version, const char *state, size_t state_len,
                            const char *meta, size_t meta_len, struct tide_error *err)
{
    sqlite3_stmt *st = stmt(s, ST_PUT_SNAPSHOT, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    int rc = bind_text(st, 1, stream, stream_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, version);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 3, state, state_len);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 4, meta, meta_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_TOOBIG)
        ret = tide_error_set(err, TIDE_EINVAL, "%s: stream %.*s: snapshot is too big", s->path,
                             SHOWN(stream_len), stream);
    else if (rc != SQLITE_DONE)
        ret = FAIL(s, rc, err, "stream %.*s: cannot write its snapshot", SHOWN(stream_len), stream);
    sqlite3_reset(st);
    return ret;
}

/* ---- caller statements ------------------------------------------------- */

int tide_store_exec(struct tide_store *s, const char *sql, struct tide_error *err)
{
    tide_store_end_read(s);
    return exec(s, sql, err);
}

/* The cached statement of sql, prepared on first use; NULL and err. */
static sqlite3_stmt *user_stmt(struct tide_store *s, const char *sql, size_t len,
                               struct tide_error *err)
{
    for (int i = 0; i < s->nuser; i++) {
        if (s->user[i].len == len && memcmp(s->user[i].sql, sql, len) == 0)
            return s->user[i].st;
    }
    if (len > INT_MAX) {
        tide_error_set(err, TIDE_EINVAL, "%s: statement too long", s->path);
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK) {
        FAIL(s, rc, err, "cannot prepare \"%.*s\"", (int)(len > 160 ? 160 : len), sql);
        sqlite3_finalize(st);
        return NULL;
    }
    if (st == NULL) {
        tide_error_set(err, TIDE_EINVAL, "%s: empty statement", s->path);
        return NULL;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        sqlite3_finalize(st);
        tide_error_set(err, TIDE_ENOMEM, "%s: out of memory", s->path);
        return NULL;
    }
    memcpy(copy, sql, len);
    copy[len] = '\0';
    if (s->nuser == TIDE_STORE_USER_STMTS) {
        /* full: drop the oldest (the SQL of a backend is a fixed set, so
         * this only happens to callers that build SQL on the fly) */
        sqlite3_finalize(s->user[0].st);
        free(s->user[0].sql);
        memmove(&s->user[0], &s->user[1], sizeof(s->user[0]) * (TIDE_STORE_USER_STMTS - 1));
        s->nuser--;
    }
    s->user[s->nuser++] = (struct user_stmt){.sql = copy, .len = len, .st = st};
    return st;
}

int tide_store_query(struct tide_store *s, const char *sql, size_t sql_len,
                     const struct tide_store_value *params, int n, struct tide_error *err)
{
    tide_store_end_read(s);
    sqlite3_stmt *st = user_stmt(s, sql, sql_len, err);
    if (st == NULL)
        return err ? err->code : TIDE_ESTORE;
    /* no stale pointer from an earlier call stays bound */
    sqlite3_clear_bindings(st);
    if (n > sqlite3_bind_parameter_count(st))
        return tide_error_set(err, TIDE_EINVAL, "%s: %d parameters given, the statement takes %d",
                              s->path, n, sqlite3_bind_parameter_count(st));
    for (int i = 0; i < n; i++) {
        const struct tide_store_value *v = &params[i];
        int rc;
        switch (v->type) {
        case TIDE_SV_INT: rc = sqlite3_bind_int64(st, i + 1, v->i); break;
        case TIDE_SV_REAL: rc = sqlite3_bind_double(st, i + 1, v->d); break;
        case TIDE_SV_TEXT: rc = bind_text(st, i + 1, v->p, v->len); break;
        default: rc = sqlite3_bind_null(st, i + 1); break;
        }
        if (rc != SQLITE_OK) {
            int ret = rc == SQLITE_TOOBIG
                          ? tide_error_set(err, TIDE_EINVAL, "%s: parameter %d is too big", s->path, i + 1)
                          : FAIL(s, rc, err, "cannot bind parameter %d", i + 1);
            sqlite3_clear_bindings(st);
            return ret;
        }
    }
    s->active = st;
    return 0;
}

int tide_store_query_next(struct tide_store *s, struct tide_store_value *cols, int max, int *ncols,
                          struct tide_error *err)
{
    sqlite3_stmt *st = s->active;
    *ncols = 0;
    if (st == NULL)
        return 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int n = sqlite3_column_count(st);
        if (n > max)
            n = max;
        for (int i = 0; i < n; i++) {
            struct tide_store_value *v = &cols[i];
            v->p = NULL;
            v->len = 0;
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER:
                v->type = TIDE_SV_INT;
                v->i = sqlite3_column_int64(st, i);
                break;
            case SQLITE_FLOAT:
                v->type = TIDE_SV_REAL;
                v->d = sqlite3_column_double(st, i);
                break;
            case SQLITE_NULL:
                v->type = TIDE_SV_NULL;
                break;
            default:
                v->type = TIDE_SV_TEXT;
                if (column_text(st, i, &v->p, &v->len) != SQLITE_OK) {
                    tide_store_end_read(s);
                    return tide_error_set(err, TIDE_ENOMEM, "%s: out of memory reading a row", s->path);
                }
            }
        }
        *ncols = n;
        return 1;
    }
    int ret = 0;
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        ret = tide_error_set(err, TIDE_ECONFLICT, "%s: %s", s->path, sqlite3_errmsg(s->db));
    else if (rc != SQLITE_DONE)
        ret = FAIL(s, rc, err, "\"%.160s\"", sqlite3_sql(st));
    tide_store_end_read(s);
    /* the parameters' text belongs to the caller: unbind it now */
    sqlite3_clear_bindings(st);
    return ret;
}

int64_t tide_store_changes(struct tide_store *s)
{
    return (int64_t)sqlite3_changes(s->db);
}

const char *tide_store_error_name(int code)
{
    switch (code) {
    case TIDE_ECONFLICT: return "ECONFLICT";
    case TIDE_EBUSY: return "EBUSY";
    case TIDE_ESTORE: return "ESTORE";
    case TIDE_ESCHEMA: return "ESCHEMA";
    default: return tide_error_name(code);
    }
}

/* ---- groups of appends ------------------------------------------------- */

void tide_store_append_fail(struct tide_store_append *a, int code, const char *message)
{
    free(a->message);
    a->code = code;
    a->current = -1;
    a->message = strdup(message ? message : "");
}

static int apply_fail(struct tide_store *s, struct tide_store_append *a, const struct tide_error *e,
                      int single, struct tide_error *err)
{
    if (!tide_store_in_transaction(s)) {
        if (err != NULL && err != e)
            *err = *e;
        return e->code < 0 ? e->code : TIDE_ESTORE;
    }
    if (!single) {
        tide_store_rollback_to(s, NULL);
        tide_store_release(s, NULL);
    }
    tide_store_append_fail(a, e->code, e->message);
    return 0;
}

/* a's outcome: the stream is at version current, not at a->expected */
static int conflict_at(struct tide_store_append *a, int64_t current)
{
    free(a->message);
    a->message = NULL;
    a->code = TIDE_ECONFLICT;
    a->current = current;
    return 0;
}

int tide_store_apply(struct tide_store *s, struct tide_store_append *a, struct tide_error *err)
{
    struct tide_error e;
    tide_error_clear(&e);
    a->current = -1;
    if (a->snapshot) {
        if (tide_store_put_snapshot(s, a->stream, a->stream_len, a->expected, a->state, a->state_len,
                                    a->meta, a->meta_len, &e) < 0)
            return apply_fail(s, a, &e, 1, err);
        a->code = 0;
        a->last = a->expected;
        return 0;
    }
    int64_t current = 0;
    /* (an empty append has no insert to meet the constraint: it reads) */
    int reached = a->reached && a->nevents > 0;
    if (!reached) {
        if (tide_store_max_version(s, a->stream, a->stream_len, &current, &e) < 0)
            return apply_fail(s, a, &e, 1, err);
        if (current != a->expected)
            return conflict_at(a, current);
    }
    /* One event is one INSERT, which SQLite undoes by itself when it fails;
     * several need a savepoint, so that a failure keeps none of them. */
    int single = a->nevents == 1;
    if (!single && tide_store_savepoint(s, &e) < 0)
        return apply_fail(s, a, &e, 1, err);
    for (size_t i = 0; i < a->nevents; i++) {
        struct tide_store_event ev = a->events[i];
        ev.stream = a->stream;
        ev.stream_len = a->stream_len;
        ev.version = a->expected + 1 + (int64_t)i;
        if (tide_store_insert_event(s, &ev, &e) < 0) {
            /* a reached stream whose next version exists: another append
             * came first; the outcome is the version check's Conflict */
            if (!(reached && e.code == TIDE_ECONFLICT))
                return apply_fail(s, a, &e, single, err);
            if (!single) {
                tide_store_rollback_to(s, NULL);
                tide_store_release(s, NULL);
            }
            if (tide_store_max_version(s, a->stream, a->stream_len, &current, &e) < 0)
                return apply_fail(s, a, &e, 1, err);
            return conflict_at(a, current);
        }
    }
    if (!single && tide_store_release(s, &e) < 0)
        return apply_fail(s, a, &e, 0, err);
    a->code = 0;
    a->last = a->expected + (int64_t)a->nevents;
    return 0;
}
