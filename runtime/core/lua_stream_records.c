/*
 * lua_stream_records.c - core.decode_stream_records: a GetRecords response
 * of the events table's stream, straight to projector events.
 *
 *   local r, err = core.decode_stream_records(body)
 *   r = { events = { {stream=, aggregate=, id=, version=, type=, data=,
 *                     meta=, as_stored=}, ... },
 *         records = <records in the response, events or not>,
 *         last_seq = <SequenceNumber of the last record> | nil,
 *         last_created = <its ApproximateCreationDateTime> | nil,
 *         NextShardIterator = ... | nil }
 *
 * The page is read by ddb_stream_records.c (jsmn; what is an event, which
 * attributes count); this file is its visitor, which builds the tables.
 * The stream name is split by tide_stream_name_split. data (AttributeValue
 * JSON) and meta (plain JSON) are stored as text and decoded here by the
 * codec's nested decoder (tide_codec_decode_nested): the projector needs
 * them for nearly every event, and no Lua string is made of them. An event
 * whose data was decoded has as_stored = true: the data is as stored, not
 * upcast yet (the projector does that). A text that does not decode stays
 * a string, for the projector to report.
 */
#include "lua_codec.h"

#include <lauxlib.h>

#include "stream_name.h"

/* Stack slots while the page is read: [body, result, events, guard]; the
 * event being built sits on top of them. */
#define SLOT_RESULT 2
#define SLOT_EVENTS 3

struct builder {
    lua_State *L;
    struct guard *guard; /* the call's: owns the reader and the nested decoder */
    int nevents;
};

static const char *on_event(void *ud, double version)
{
    struct builder *b = ud;
    lua_State *L = b->L;
    if (!lua_checkstack(L, 8))
        return "out of Lua stack";
    lua_createtable(L, 0, 8);        // [event]
    lua_pushnumber(L, version);
    lua_setfield(L, -2, "version");
    return NULL;
}

/* The event's stream name, split: // [event] -> [event] */
static void set_stream(lua_State *L, const char *s, size_t n)
{
    struct tide_stream_name name = tide_stream_name_split(s, n);
    lua_pushlstring(L, name.aggregate, name.aggregate_len);
    lua_setfield(L, -2, "aggregate");
    lua_pushlstring(L, name.id, name.id_len);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, s, n);
    lua_setfield(L, -2, "stream");
}

/* How a text becomes a value. */
enum take { TAKE_STRING, TAKE_AV, TAKE_JSON };

/* Sets field of the table at idx to the text s, decoded first as take says
 * (the string itself when it does not decode). Returns whether it was
 * decoded. */
static bool set_text(struct builder *b, int idx, const char *field, const char *s, size_t n,
                     enum take take)
{
    lua_State *L = b->L;
    bool decoded = take != TAKE_STRING &&
                   tide_codec_decode_nested(L, b->guard, s, n, take == TAKE_AV);
    if (!decoded)
        lua_pushlstring(L, s, n);
    lua_setfield(L, idx, field);
    return decoded;
}

static const char *on_text(void *ud, enum tide_ddb_record_text what, const char *s, size_t n)
{
    struct builder *b = ud;
    lua_State *L = b->L;
    switch (what) {
    case TIDE_DDB_REC_STREAM:
        set_stream(L, s, n);
        break;
    case TIDE_DDB_REC_TYPE:
        set_text(b, -2, "type", s, n, TAKE_STRING);
        break;
    case TIDE_DDB_REC_DATA:
        if (set_text(b, -2, "data", s, n, TAKE_AV)) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "as_stored");
        }
        break;
    case TIDE_DDB_REC_META:
        set_text(b, -2, "meta", s, n, TAKE_JSON);
        break;
    case TIDE_DDB_REC_NEXT_ITERATOR:
        set_text(b, SLOT_RESULT, "NextShardIterator", s, n, TAKE_STRING);
        break;
    case TIDE_DDB_REC_LAST_SEQ:
    default:
        set_text(b, SLOT_RESULT, "last_seq", s, n, TAKE_STRING);
        break;
    }
    return NULL;
}

static const char *on_event_end(void *ud)
{
    struct builder *b = ud;
    lua_rawseti(b->L, SLOT_EVENTS, ++b->nevents); // []
    return NULL;
}

static const struct tide_ddb_records_visitor BUILDER = {
    .event = on_event,
    .text = on_text,
    .event_end = on_event_end,
};

int tide_codec_decode_stream_records(lua_State *L)
{
    size_t len;
    const char *body = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);                                   // [body]
    lua_createtable(L, 0, 6);                           // [body, result]
    /* room for the events of a full page (~500 bytes a record); an empty
     * page, what an idle stream gives, allocates nothing */
    lua_createtable(L, (int)(len / 512 < 1000 ? len / 512 : 1000), 0); // [body, result, events]
    /* the guard owns the tokens and parsers: freed even if a Lua error
     * unwinds through the call (lua_codec.h) */
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), TIDE_CODEC_FRAME());
                                                        // [body, result, events, guard]
    struct builder b = {L, g, 0};
    struct tide_ddb_records_page page;
    struct tide_error err;
    int rc = tide_ddb_read_records(&g->records, body, len, &BUILDER, &b, &page, &err);
    tide_codec_guard_done(g);
    if (rc < 0)
        return tide_codec_push_fail(L, err.message);
    lua_pushinteger(L, page.records);
    lua_setfield(L, SLOT_RESULT, "records");
    if (page.has_created) {
        lua_pushnumber(L, page.last_created);
        lua_setfield(L, SLOT_RESULT, "last_created");
    }
    lua_settop(L, SLOT_EVENTS);                         // [body, result, events]
    lua_setfield(L, SLOT_RESULT, "events");             // [body, result]
    return 1;
}
