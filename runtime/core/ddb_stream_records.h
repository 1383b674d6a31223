/*
 * ddb_stream_records.h - a GetRecords response of the events table's
 * stream, read straight into events: the pure half of
 * core.decode_stream_records (the binding, lua_stream_records.c, builds the
 * Lua tables). No Lua.
 *
 * The projection runner needs five attributes of each record's NewImage and
 * two fields of its envelope, out of about 110 JSON tokens a record; a page
 * holds up to 1000 records (~570 KB). Reading every token through yajl's
 * callbacks cost about 20,000 instructions a record, a third of the whole
 * runner's work, so the page is split into tokens by jsmn (Debian's
 * libjsmn-dev: offsets into the text, no allocation, no unescaping), and
 * only the tokens kept are read: keys are compared as raw bytes (a key
 * spelled with escapes is not recognised, and DynamoDB never writes one),
 * strings with a backslash are unescaped by yajl, numbers by strtod. jsmn
 * checks the structure (strict mode); it does not check UTF-8: the texts
 * that become values are checked by whoever decodes them.
 *
 * An INSERT or MODIFY record whose NewImage has an S `stream` and an N
 * `version` is an event; other records only count and move the last
 * sequence number.
 */
#ifndef TIDE_DDB_STREAM_RECORDS_H
#define TIDE_DDB_STREAM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>

#include <yajl/yajl_parse.h>

#include "error.h"

/* The texts the reader hands over. */
enum tide_ddb_record_text {
    TIDE_DDB_REC_STREAM,        /* an event's: the S of NewImage.stream */
    TIDE_DDB_REC_TYPE,          /* the S of NewImage.type */
    TIDE_DDB_REC_DATA,          /* the S of NewImage.data (AttributeValue JSON) */
    TIDE_DDB_REC_META,          /* the S of NewImage.meta (plain JSON) */
    TIDE_DDB_REC_NEXT_ITERATOR, /* the page's NextShardIterator */
    TIDE_DDB_REC_LAST_SEQ,      /* the SequenceNumber of the page's last record */
};

/* Each callback returns NULL, or a message that stops the reading. */
struct tide_ddb_records_visitor {
    /* An event starts, with its version. */
    const char *(*event)(void *ud, double version);
    /* A text, unescaped: s[0..n) is valid during the call only. An event's
     * texts come between its event and event_end calls (stream first, the
     * others when the record has them). */
    const char *(*text)(void *ud, enum tide_ddb_record_text what, const char *s, size_t n);
    const char *(*event_end)(void *ud);
};

/* What the reader keeps from page to page: the token array and the parser
 * that unescapes strings. Caller-owned; start with
 * tide_ddb_records_reader_init. */
struct tide_ddb_records_reader {
    void *tokens;      /* jsmn's tokens (malloc) */
    size_t tokens_cap; /* entries of tokens */
    yajl_handle unescape;
    const yajl_alloc_funcs *afs; /* for the parser (NULL: malloc) */
};

void tide_ddb_records_reader_init(struct tide_ddb_records_reader *r, const yajl_alloc_funcs *afs);
/* Frees the parser (idempotent; safe after a longjmp out of a read). */
void tide_ddb_records_reader_close(struct tide_ddb_records_reader *r);
/* Frees the parser and the tokens. */
void tide_ddb_records_reader_free(struct tide_ddb_records_reader *r);

/* The page as a whole. */
struct tide_ddb_records_page {
    int records;         /* records in the page, events or not */
    bool has_created;
    double last_created; /* ApproximateCreationDateTime of the last record that has one */
};

/* Reads the page body[0..len), handing its events and texts to v. Returns
 * 0, or TIDE_EINVAL / TIDE_ENOMEM with "GetRecords response: <why>". */
int tide_ddb_read_records(struct tide_ddb_records_reader *r, const char *body, size_t len,
                          const struct tide_ddb_records_visitor *v, void *ud,
                          struct tide_ddb_records_page *page, struct tide_error *err);

#endif
