/*
 * json_arena.h - a small arena that yajl allocates from, so that parsing a
 * small text does no malloc at all. No Lua.
 *
 * Each block is preceded by a header holding its size and aligned to 16
 * bytes; freeing a block is a no-op (the whole arena is emptied by
 * tide_json_arena_reset), growing the last block happens in place. What
 * does not fit comes from malloc and goes back to free: yajl_free of a
 * parser returns it, also for a parser a longjmp left half-used. Under
 * AddressSanitizer the free part of the arena and a red zone after each
 * block are poisoned, so an overrun is still caught.
 */
#ifndef TIDE_JSON_ARENA_H
#define TIDE_JSON_ARENA_H

#include <stddef.h>

#include <yajl/yajl_common.h>

/* The handle, lexer, byte stack and decode buffer of a parse fit. */
#define TIDE_JSON_ARENA_BYTES 4096

struct tide_json_arena {
    yajl_alloc_funcs afs; /* pass &afs to yajl_alloc */
    size_t used;          /* bytes handed out (with headers) */
    unsigned char mem[TIDE_JSON_ARENA_BYTES];
};

/* Readies a (poisons it under ASan). */
void tide_json_arena_init(struct tide_json_arena *a);
/* Empties a: every block in it is free again. Blocks that came from malloc
 * are not affected (yajl_free gives them back). */
void tide_json_arena_reset(struct tide_json_arena *a);
/* Unpoisons a before its memory goes back to whoever owns it. */
void tide_json_arena_finish(struct tide_json_arena *a);

#endif
