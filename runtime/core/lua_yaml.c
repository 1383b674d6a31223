/*
 * lua_yaml.c - binding of yaml_doc.h: core.yaml_decode.
 *
 * The document is parsed into a C tree first (no libyaml state outlives
 * tide_yaml_parse); the tree and the key-path buffer live in a userdata with
 * a __gc, so a Lua error while building the values (out of memory) leaks
 * nothing.
 */
#include "lua_core.h"
#include "yaml_doc.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOC_MT "tide.yaml_doc"
#define LIST_MT "tide.list" /* the codec's list marker: core.is_list(seq) is true */

struct decoding {
    struct tide_yaml_doc *doc;
    char *path; /* the key path of the node being built: "dynamodb.region", "hosts[2]" */
    size_t cap;
};

static int decoding_gc(lua_State *L)
{
    struct decoding *d = luaL_checkudata(L, 1, DOC_MT);
    tide_yaml_doc_delete(d->doc);
    free(d->path);
    d->doc = NULL;
    d->path = NULL;
    return 0;
}

/* Stack slots of l_yaml_decode used while building. */
enum { S_DEC = 3, S_MEMO, S_LINES, S_LIST };

/* Appends to the path (after n bytes); returns the new length. */
static size_t path_append(lua_State *L, struct decoding *d, size_t n, const char *sep,
                          const char *s, size_t len, const char *end)
{
    size_t add = strlen(sep) + len + strlen(end);
    if (n + add + 1 > d->cap) {
        size_t cap = (n + add + 1) * 2;
        char *p = realloc(d->path, cap);
        if (p == NULL)
            luaL_error(L, "yaml_decode: out of memory");
        d->path = p;
        d->cap = cap;
    }
    char *p = d->path + n;
    memcpy(p, sep, strlen(sep));
    p += strlen(sep);
    memcpy(p, s, len);
    p += len;
    memcpy(p, end, strlen(end));
    return n + add;
}

static void record_line(lua_State *L, struct decoding *d, size_t n, unsigned line)
{
    lua_pushlstring(L, d->path, n);   // [..., path]
    lua_pushinteger(L, (lua_Integer)line);
    lua_rawset(L, S_LINES);           // [...]
}

static void push_scalar(lua_State *L, const struct tide_yaml_node *n)
{
    switch (n->type) {
    case TIDE_YAML_NULL: lua_pushlightuserdata(L, NULL); break; /* core.null */
    case TIDE_YAML_BOOL: lua_pushboolean(L, n->boolean); break;
    case TIDE_YAML_INT:
    case TIDE_YAML_FLOAT: lua_pushnumber(L, n->number); break;
    default: lua_pushlstring(L, n->text, n->len); break;
    }
}

/*
 * Pushes the Lua value of node. path[0..plen) is its key path; lines are
 * recorded for its children unless with_lines is 0 (inside an alias: the
 * anchored node recorded them already, and walking aliases again could
 * take exponential time).
 */
static void push_node(lua_State *L, struct decoding *d, const struct tide_yaml_node *node,
                      size_t plen, int with_lines)
{
    luaL_checkstack(L, 6, "yaml_decode: document too deep");
    if (node->kind == TIDE_YAML_ALIAS) {
        const struct tide_yaml_node *t = node->target;
        if (t->kind == TIDE_YAML_SCALAR) {
            push_scalar(L, t);
            return;
        }
        /* An alias gives the very table built for its anchor, as lyaml does. */
        lua_pushlightuserdata(L, (void *)t);
        lua_rawget(L, S_MEMO);                       // [..., v]
        if (!lua_isnil(L, -1))
            return;
        lua_pop(L, 1);
        push_node(L, d, t, plen, 0);
        return;
    }
    if (node->kind == TIDE_YAML_SCALAR) {
        push_scalar(L, node);
        return;
    }
    int seq = node->kind == TIDE_YAML_SEQUENCE;
    lua_createtable(L, seq ? (int)node->count : 0, seq ? 0 : (int)node->count); // [..., t]
    if (seq) {
        lua_pushvalue(L, S_LIST);
        lua_setmetatable(L, -2);
    }
    if (node->anchored) {
        lua_pushlightuserdata(L, (void *)node);
        lua_pushvalue(L, -2);
        lua_rawset(L, S_MEMO);
    }
    for (size_t i = 0; i < node->count; i++) {
        size_t n;
        if (seq) {
            char idx[32];
            int len = snprintf(idx, sizeof(idx), "%zu", i + 1);
            const struct tide_yaml_node *item = node->items[i];
            if (with_lines) {
                n = path_append(L, d, plen, "[", idx, (size_t)len, "]");
                record_line(L, d, n, item->line);
            } else {
                n = plen;
            }
            push_node(L, d, item, n, with_lines);    // [..., t, v]
            lua_rawseti(L, -2, (int)(i + 1));        // [..., t]
            continue;
        }
        const struct tide_yaml_node *key = node->items[2 * i];
        const struct tide_yaml_node *rk = tide_yaml_resolve(key);
        push_scalar(L, rk);                          // [..., t, k]
        if (with_lines) {
            size_t klen;
            const char *ks;
            if (rk->type == TIDE_YAML_BOOL) {
                ks = rk->boolean ? "true" : "false";
                klen = strlen(ks);
                lua_pushnil(L);
            } else {
                lua_pushvalue(L, -1);
                ks = lua_tolstring(L, -1, &klen); /* on a copy: a number key becomes text */
            }
            n = path_append(L, d, plen, plen ? "." : "", ks, klen, "");
            lua_pop(L, 1);
            record_line(L, d, n, key->line);
        } else {
            n = plen;
        }
        push_node(L, d, node->items[2 * i + 1], n, with_lines); // [..., t, k, v]
        lua_rawset(L, -3);                           // [..., t]
    }
}

/* core.yaml_decode(text [, source_name]) -> value, lines | nil, err */
static int l_yaml_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *source = luaL_optstring(L, 2, "<string>");
    lua_settop(L, 2);                                // [text, source]
    struct decoding *d = lua_newuserdata(L, sizeof(*d)); // [text, source, dec]
    memset(d, 0, sizeof(*d));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);

    struct tide_error err;
    int rc = tide_yaml_parse(text, len, source, &d->doc, &err);
    if (rc == TIDE_ENOMEM)
        return luaL_error(L, "%s", err.message);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    lua_newtable(L);                                 // [text, source, dec, memo]
    lua_newtable(L);                                 // [text, source, dec, memo, lines]
    lua_pushvalue(L, lua_upvalueindex(2));           // [text, source, dec, memo, lines, list_mt]
    const struct tide_yaml_node *root = tide_yaml_doc_root(d->doc);
    if (root == NULL)
        lua_pushlightuserdata(L, NULL);              /* an empty document: core.null */
    else
        push_node(L, d, root, 0, 1);                 // [..., list_mt, value]
    /* Free the tree now rather than at the next GC cycle. */
    tide_yaml_doc_delete(d->doc);
    free(d->path);
    d->doc = NULL;
    d->path = NULL;
    lua_pushvalue(L, S_LINES);                       // [..., value, lines]
    return 2;
}

void tide_lua_open_yaml(lua_State *L)
{
    // [core]
    luaL_newmetatable(L, DOC_MT);                    // [core, doc_mt]
    lua_pushcfunction(L, decoding_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newmetatable(L, LIST_MT);                   // [core, doc_mt, list_mt] (the codec's)
    lua_pushcclosure(L, l_yaml_decode, 2);           // [core, fn]
    lua_setfield(L, -2, "yaml_decode");              // [core]
}
