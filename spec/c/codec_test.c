/*
 * codec_test.c - the pure layer of the DynamoDB JSON codec, tested in C
 * with no Lua: the decoder through a visitor that writes what it is handed
 * as text, the encoder driven by hand as a walker would drive it, the
 * GetRecords reader, item sizes and stream names. Built as
 * build/test/codec_test and run by spec/unit/codec_c_spec.lua; prints one
 * line per failed check and "N checks, N failed", exits 1 on a failure.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb_decode.h"
#include "ddb_encode.h"
#include "ddb_json_writer.h"
#include "ddb_limits.h"
#include "ddb_stream_records.h"
#include "ddb_text.h"
#include "stream_name.h"

static int checks, failed;

static void check_str(int line, const char *what, const char *got, const char *want)
{
    checks++;
    if (got != NULL && strcmp(got, want) == 0)
        return;
    failed++;
    printf("line %d: %s\n  got:  %s\n  want: %s\n", line, what, got ? got : "(null)", want);
}

static void check_int(int line, const char *what, long got, long want)
{
    checks++;
    if (got == want)
        return;
    failed++;
    printf("line %d: %s: got %ld, want %ld\n", line, what, got, want);
}

#define CHECK_STR(what, got, want) check_str(__LINE__, (what), (got), (want))
#define CHECK_INT(what, got, want) check_int(__LINE__, (what), (long)(got), (long)(want))

/* ---- a visitor that writes what the decoder hands over ---------------------
 * {k=v,...} objects, [..] lists, SS[..] sets, "s" strings, numbers as %.17g,
 * N:<text> numbers beyond a double, B:<hex> binary, true/false, null. */

#define LEVELS 256

struct render {
    struct tide_json_buf s[LEVELS];
    int n;
};

static void r_push(struct render *r)
{
    r->s[r->n++].len = 0;
}

static void r_add(struct render *r, const char *t, size_t n)
{
    tide_json_add(&r->s[r->n - 1], t, n);
}

static void r_addf(struct render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void r_addf(struct render *r, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    r_add(r, buf, (size_t)n);
}

static const char *v_open(void *ud, enum tide_ddb_container c, size_t hint)
{
    static const char *const OPEN[] = {"{", "[", "SS[", "NS[", "BS["};
    struct render *r = ud;
    (void)hint;
    if (r->n >= LEVELS - 2)
        return "render stack exhausted";
    r_push(r);
    r_addf(r, "%s", OPEN[c]);
    return NULL;
}

static void v_close(void *ud, enum tide_ddb_container c)
{
    r_addf(ud, "%s", c == TIDE_DDB_OBJECT ? "}" : "]");
}

static void v_key(void *ud, const char *k, size_t n)
{
    r_push(ud);
    r_add(ud, k, n);
}

static void v_string(void *ud, const char *s, size_t n)
{
    r_push(ud);
    r_add(ud, "\"", 1);
    r_add(ud, s, n);
    r_add(ud, "\"", 1);
}

static void v_number(void *ud, double x)
{
    r_push(ud);
    r_addf(ud, "%.17g", x);
}

static void v_big_number(void *ud, const char *text, size_t n)
{
    r_push(ud);
    r_addf(ud, "N:%.*s", (int)n, text);
}

static bool v_binary(void *ud, const char *b64, size_t n)
{
    unsigned char bytes[256];
    if (n / 4 * 3 > sizeof(bytes))
        return false;
    long got = tide_ddb_base64_decode(b64, n, bytes);
    if (got < 0)
        return false;
    r_push(ud);
    r_addf(ud, "B:");
    for (long i = 0; i < got; i++)
        r_addf(ud, "%02x", bytes[i]);
    return true;
}

static void v_boolean(void *ud, bool b)
{
    r_push(ud);
    r_addf(ud, "%s", b ? "true" : "false");
}

static void v_null(void *ud)
{
    r_push(ud);
    r_addf(ud, "null");
}

/* Appends the value on top to its container (after its key). */
static void v_store(void *ud, enum tide_ddb_into into, size_t index)
{
    struct render *r = ud;
    struct tide_json_buf *v = &r->s[r->n - 1];
    struct tide_json_buf *p = &r->s[r->n - (into == TIDE_DDB_INTO_MEMBER ? 3 : 2)];
    char last = p->p[p->len - 1];
    (void)index;
    if (last != '{' && last != '[')
        tide_json_addc(p, ',');
    if (into == TIDE_DDB_INTO_MEMBER) {
        struct tide_json_buf *k = &r->s[r->n - 2];
        tide_json_add(p, k->p, k->len);
        tide_json_addc(p, '=');
    }
    tide_json_add(p, v->p, v->len);
    r->n -= into == TIDE_DDB_INTO_MEMBER ? 2 : 1;
}

static void v_drop(void *ud)
{
    ((struct render *)ud)->n--;
}

static const struct tide_ddb_visitor RENDER = {
    v_open, v_close, v_key, v_string, v_number, v_big_number, v_binary, v_boolean, v_null,
    v_store, v_drop,
};

static struct render render;
static char rendered[4096];

/* Decodes text in mode; the rendered value, or the error message. */
static const char *decode(const char *text, enum tide_ddb_mode mode, const char *root, bool prefix)
{
    struct tide_ddb_decoder *d = malloc(sizeof(*d));
    struct tide_error err;
    tide_ddb_decoder_init(d, NULL, false);
    render.n = 0;
    int rc = tide_ddb_decode(d, text, strlen(text), mode, root, prefix, &RENDER, &render, &err);
    tide_ddb_decoder_close(d);
    free(d);
    if (rc < 0)
        snprintf(rendered, sizeof(rendered), "%s", err.message);
    else
        snprintf(rendered, sizeof(rendered), "%.*s", (int)render.s[0].len, render.s[0].p);
    return rendered;
}

#define RESPONSE(text) decode((text), TIDE_DDB_MODE_PLAIN, "response", false)
#define VALUE(text) decode((text), TIDE_DDB_MODE_AV, "value", true)

static void test_decode(void)
{
    CHECK_STR("a Query response",
              RESPONSE("{\"Count\":2,\"Items\":[{\"id\":{\"S\":\"a\"},\"n\":{\"N\":\"5\"}},"
                       "{\"tags\":{\"SS\":[\"x\",\"y\"]},\"b\":{\"B\":\"AAE=\"},"
                       "\"z\":{\"NULL\":true},\"t\":{\"BOOL\":false}}],"
                       "\"LastEvaluatedKey\":{\"id\":{\"S\":\"a\"}}}"),
              "{Count=2,Items=[{id=\"a\",n=5},{tags=SS[\"x\",\"y\"],b=B:0001,z=null,t=false}],"
              "LastEvaluatedKey={id=\"a\"}}");
    CHECK_STR("numbers: a double when exact, else the text",
              VALUE("{\"L\":[{\"N\":\"0.50\"},{\"N\":\"9007199254740993\"},"
                    "{\"NS\":[\"1\",\"12345678901234567890123456789012345678\"]}]}"),
              "[0.5,N:9007199254740993,NS[1,N:12345678901234567890123456789012345678]]");
    CHECK_STR("M and L, plain arrays",
              RESPONSE("{\"Item\":{\"m\":{\"M\":{\"l\":{\"L\":[]}}}},\"Names\":[\"a\",[]],\"X\":null}"),
              "{Item={m={l=[]}},Names=[\"a\",[]],X=null}");
    CHECK_STR("names inside RequestItems are table names",
              RESPONSE("{\"RequestItems\":{\"Item\":[{\"PutRequest\":{\"Item\":{\"a\":{\"S\":\"b\"}}}}]}}"),
              "{RequestItems={Item=[{PutRequest={Item={a=\"b\"}}}]}}");
    CHECK_STR("the last of repeated type keys wins",
              RESPONSE("{\"Item\":{\"x\":{\"S\":\"1\",\"S\":\"2\"}}}"), "{Item={x=\"2\"}}");
    CHECK_STR("NULL takes any value", VALUE("{\"NULL\":{\"x\":[1]}}"), "null");
    CHECK_STR("a wrong value, with its path",
              RESPONSE("{\"Items\":[{\"id\":{\"S\":\"a\"}},{\"price\":{\"N\":\"12abc\"}}]}"),
              "Items[2].price: \"12abc\" is not a valid DynamoDB number (not a decimal number)");
    CHECK_STR("awkward keys are quoted in paths",
              RESPONSE("{\"Item\":{\"my attr\":{\"L\":[{\"SS\":[\"a\",2]}]}}}"),
              "Item[\"my attr\"][1][2]: SS members must be strings");
    CHECK_STR("keys with escapes too", RESPONSE("{\"Item\":{\"a\\u0000\":{\"S\":1}}}"),
              "Item[\"a\\x00\"]: an S value must be a string");
    CHECK_STR("a value's root", VALUE("{\"M\":{\"a\":{\"Q\":1}}}"),
              "value.a: unknown AttributeValue type \"Q\"");
    CHECK_STR("not an object of AttributeValues",
              RESPONSE("{\"Responses\":{\"t\":[{\"a\":{\"S\":\"x\"}},[\"x\"]]}}"),
              "Responses.t[2]: expected an object of attribute name -> value");
    CHECK_STR("malformed JSON wins over a value error",
              RESPONSE("{\"Item\":{\"a\":{\"S\":1}},\"b\":tru}"),
              "malformed JSON at line 1, column 30 (lexical error: invalid string in json text.); "
              "the text begins: \"{\"Item\":{\"a\":{\"S\":1}},\"b\":tru}\"");
    CHECK_STR("an empty text", RESPONSE(""), "malformed JSON: the text is empty");
    char deep[1024] = "";
    for (int i = 0; i < 32; i++)
        strcat(deep, "{\"M\":{\"a\":");
    strcat(deep, "{\"M\":{}}");
    for (int i = 0; i < 32; i++)
        strcat(deep, "}}");
    CHECK_STR("DynamoDB's depth", VALUE(deep),
              "value.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nesting deeper "
              "than 32 levels (DynamoDB's limit; a cyclic table?)");
}

/* ---- the encoder, driven as a walker drives it ------------------------------ */

static struct tide_json_buf out, scratch;
static struct tide_ddb_encoder enc;
static int enc_rc;

static void start(enum tide_ddb_mode mode, const char *root, bool prefix)
{
    out.len = 0;
    enc_rc = 0;
    tide_ddb_encoder_init(&enc, &out, &scratch, mode, root, prefix);
}

/* Each step runs only while the walk has not failed. */
#define STEP(call) (void)(enc_rc < 0 || (enc_rc = (call)) < 0)

static void key(const char *k)
{
    STEP(tide_ddb_enc_key(&enc, k, strlen(k)));
}

static void item(void)
{
    STEP(tide_ddb_enc_item(&enc));
}

static void str(const char *s)
{
    struct tide_ddb_scalar v = {TIDE_DDB_SCALAR_STRING, "string", s, strlen(s), 0, false};
    STEP(tide_ddb_enc_scalar(&enc, &v));
}

static void num(double x)
{
    struct tide_ddb_scalar v = {TIDE_DDB_SCALAR_NUMBER, "number", NULL, 0, x, false};
    STEP(tide_ddb_enc_scalar(&enc, &v));
}

static void bytes(const char *p, size_t n)
{
    struct tide_ddb_scalar v = {TIDE_DDB_SCALAR_BINARY, "table", p, n, 0, false};
    STEP(tide_ddb_enc_scalar(&enc, &v));
}

static void map(void)
{
    STEP(tide_ddb_enc_open(&enc, TIDE_DDB_SHAPE_OBJECT, "table"));
}

static void list(void)
{
    STEP(tide_ddb_enc_open(&enc, TIDE_DDB_SHAPE_ARRAY, "table"));
}

static void set(const char *kind)
{
    STEP(tide_ddb_enc_open_set(&enc, kind, strlen(kind), "table"));
}

static void end(void)
{
    STEP(tide_ddb_enc_close(&enc));
}

/* The text written, or the error. */
static const char *result(void)
{
    STEP(tide_ddb_enc_finish(&enc));
    if (enc_rc < 0)
        snprintf(rendered, sizeof(rendered), "%s", enc.err.message);
    else
        snprintf(rendered, sizeof(rendered), "%.*s", (int)out.len, out.p);
    return rendered;
}

static void test_encode(void)
{
    start(TIDE_DDB_MODE_PLAIN, "params", false);
    map();
    key("TableName"), str("events");
    key("Item"), map();
    key("id"), str("a"), key("n"), num(5), key("half"), num(0.5);
    key("tags"), set("SS"), item(), str("x"), item(), str("y"), end();
    key("b"), bytes("\0\1", 2);
    key("doc"), map(), key("l"), list(), item(), num(1), end(), end();
    end();
    key("Limit"), num(25);
    key("Keys"), list(), item(), map(), key("k"), str("v"), end(), end();
    end();
    CHECK_STR("a request", result(),
              "{\"TableName\":\"events\",\"Item\":{\"id\":{\"S\":\"a\"},\"n\":{\"N\":\"5\"},"
              "\"half\":{\"N\":\"0.5\"},\"tags\":{\"SS\":[\"x\",\"y\"]},\"b\":{\"B\":\"AAE=\"},"
              "\"doc\":{\"M\":{\"l\":{\"L\":[{\"N\":\"1\"}]}}}},\"Limit\":25,"
              "\"Keys\":[{\"k\":{\"S\":\"v\"}}]}");

    start(TIDE_DDB_MODE_PLAIN, "params", false);
    map(), key("Item"), map(), key("tags"), list(), item(), str("x"), item(), set("SS"), end();
    CHECK_STR("an empty set", result(), "Item.tags[2]: empty sets cannot be stored in DynamoDB");

    start(TIDE_DDB_MODE_AV, "value", true);
    set("NS"), item(), num(1), item(), num(2), item(), num(1);
    end();
    CHECK_STR("a duplicate", result(),
              "value: duplicate member 1 in a set (DynamoDB rejects duplicates)");

    start(TIDE_DDB_MODE_AV, "value", true);
    set("SS");
    static char members[40][8]; /* borrowed until the set ends */
    for (int i = 0; i < 40; i++) {
        snprintf(members[i], sizeof(members[i]), "m%d", i % 39);
        item(), str(members[i]);
    }
    end();
    CHECK_STR("a duplicate in a large set", result(),
              "value: duplicate member \"m0\" in a set (DynamoDB rejects duplicates)");

    start(TIDE_DDB_MODE_PLAIN, "params", false);
    map(), key("Item"), list();
    CHECK_STR("an array for Item", result(),
              "Item: expected a table of attribute name -> value, got an array");

    start(TIDE_DDB_MODE_PLAIN, "params", false);
    map(), key("TableName"), set("SS");
    CHECK_STR("a set outside AttributeValues", result(),
              "TableName: sets can only be stored inside AttributeValues (Item, Key, "
              "ExpressionAttributeValues, ...)");

    start(TIDE_DDB_MODE_PLAIN, "params", false);
    map(), key("ExpressionAttributeValues"), map(), key(":v"), num(0.0 / 0.0);
    CHECK_STR("NaN", result(),
              "ExpressionAttributeValues[\":v\"]: NaN and infinity cannot be stored in DynamoDB");

    start(TIDE_DDB_MODE_AV, "value", true);
    for (int i = 0; i < 33; i++)
        map(), key("a");
    CHECK_STR("33 levels", result(),
              "value.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nesting "
              "deeper than 32 levels (DynamoDB's limit; a cyclic table?)");

    start(TIDE_DDB_MODE_AV, "value", true);
    str("\xff");
    CHECK_STR("not UTF-8", result(), "value: string is not valid UTF-8 (wrap bytes with core.binary)");

    /* item sizes, by DynamoDB's rules, of what the encoder writes */
    start(TIDE_DDB_MODE_AV_MAP, "item", true);
    map(), key("id"), str("abc"), key("n"), num(-12.34), key("l"), list(), item(), str("a"), item(),
        num(1), end(), end();
    size_t size = 0;
    struct tide_error err;
    const char *text = result();
    if (tide_ddb_item_size(text, strlen(text), &size, &err) < 0)
        CHECK_STR("item_size", err.message, "");
    CHECK_INT("item_size", size, (2 + 3) + (1 + 4) + (1 + 3 + (1 + 1) + (1 + 2)));
}

/* ---- GetRecords pages ------------------------------------------------------- */

static char events[2048];

static const char *rec_event(void *ud, double version)
{
    (void)ud;
    size_t n = strlen(events);
    snprintf(events + n, sizeof(events) - n, "%s(v%g", n ? " " : "", version);
    return NULL;
}

static const char *rec_text(void *ud, enum tide_ddb_record_text what, const char *s, size_t len)
{
    static const char *const NAMES[] = {"stream", "type", "data", "meta", "next", "last_seq"};
    size_t n = strlen(events);
    (void)ud;
    if (what == TIDE_DDB_REC_STREAM) {
        struct tide_stream_name name = tide_stream_name_split(s, len);
        snprintf(events + n, sizeof(events) - n, " %.*s|%.*s", (int)name.aggregate_len,
                 name.aggregate, (int)name.id_len, name.id);
    } else {
        snprintf(events + n, sizeof(events) - n, " %s=%.*s", NAMES[what], (int)len, s);
    }
    return NULL;
}

static const char *rec_end(void *ud)
{
    (void)ud;
    size_t n = strlen(events);
    snprintf(events + n, sizeof(events) - n, ")");
    return NULL;
}

static const struct tide_ddb_records_visitor RECORDS = {rec_event, rec_text, rec_end};

static const char *read_page(const char *body, struct tide_ddb_records_page *page)
{
    struct tide_ddb_records_reader r;
    struct tide_error err;
    tide_ddb_records_reader_init(&r, NULL);
    events[0] = '\0';
    int rc = tide_ddb_read_records(&r, body, strlen(body), &RECORDS, NULL, page, &err);
    tide_ddb_records_reader_free(&r);
    if (rc < 0)
        snprintf(events, sizeof(events), "%s", err.message);
    return events;
}

static void test_records(void)
{
    struct tide_ddb_records_page page;
    CHECK_STR("a page",
              read_page("{\"Records\":[{\"eventName\":\"INSERT\",\"dynamodb\":{"
                        "\"ApproximateCreationDateTime\":1700000000,\"NewImage\":{"
                        "\"stream\":{\"S\":\"account#a\\u00e91\"},\"version\":{\"N\":\"2\"},"
                        "\"type\":{\"S\":\"Deposited\"},\"data\":{\"S\":\"{\\\"M\\\":{}}\"}},"
                        "\"SequenceNumber\":\"100\"}},"
                        "{\"eventName\":\"REMOVE\",\"dynamodb\":{\"SequenceNumber\":\"200\"}},"
                        "{\"eventName\":\"MODIFY\",\"dynamodb\":{\"NewImage\":{"
                        "\"stream\":{\"S\":\"loner\"},\"version\":{\"N\":\"1\"}}}}],"
                        "\"NextShardIterator\":\"it\"}",
                        &page),
              "(v2 account|a\xc3\xa9" "1 type=Deposited data={\"M\":{}}) (v1 loner|) next=it "
              "last_seq=200");
    CHECK_INT("records", page.records, 3);
    CHECK_INT("has_created", page.has_created, 1);
    CHECK_INT("last_created", (long)page.last_created, 1700000000);
    CHECK_STR("not a page", read_page("[1]", &page), "GetRecords response: not a JSON object");
    CHECK_STR("cut short", read_page("{\"Records\":[", &page),
              "GetRecords response: malformed JSON at byte 12 (the text ends too soon)");
}

static void test_stream_name(void)
{
    struct tide_stream_name n = tide_stream_name_split("account#a#1", 11);
    CHECK_INT("aggregate", n.aggregate_len, 7);
    CHECK_STR("id", n.id, "a#1");
    n = tide_stream_name_split("account", 7);
    CHECK_INT("no '#': the whole name", n.aggregate_len, 7);
    CHECK_INT("no '#': no id", n.id_len, 0);
}

int main(void)
{
    test_decode();
    test_encode();
    test_records();
    test_stream_name();
    for (int i = 0; i < LEVELS; i++)
        free(render.s[i].p);
    free(out.p);
    free(scratch.p);
    printf("%d checks, %d failed\n", checks, failed);
    return failed > 0;
}
