/*
 * json_arena.c - the arena yajl allocates from (see json_arena.h).
 */
#include "json_arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 16
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ARENA_REDZONE 16
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define ARENA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ARENA_REDZONE 0
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static int in_arena(const struct tide_json_arena *a, const void *p)
{
    uintptr_t x = (uintptr_t)p, base = (uintptr_t)a->mem;
    return x >= base && x < base + TIDE_JSON_ARENA_BYTES;
}

static size_t block_size(const void *p)
{
    size_t n;
    memcpy(&n, (const unsigned char *)p - ARENA_ALIGN, sizeof(n));
    return n;
}

static void set_block_size(void *p, size_t n)
{
    memcpy((unsigned char *)p - ARENA_ALIGN, &n, sizeof(n));
}

static void *arena_malloc(void *ctx, size_t n)
{
    struct tide_json_arena *a = ctx;
    uintptr_t base = (uintptr_t)a->mem, end = base + TIDE_JSON_ARENA_BYTES;
    uintptr_t at = base + a->used + ARENA_ALIGN; /* room for the header */
    at = (at + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    if (at < end && n <= end - at && n + ARENA_REDZONE <= end - at) {
        void *p = (void *)at;
        ARENA_UNPOISON((unsigned char *)p - ARENA_ALIGN, ARENA_ALIGN + n);
        set_block_size(p, n);
        a->used = at + n + ARENA_REDZONE - base;
        return p;
    }
    return malloc(n);
}

static void arena_free(void *ctx, void *p)
{
    if (p != NULL && !in_arena(ctx, p))
        free(p);
}

static void *arena_realloc(void *ctx, void *p, size_t n)
{
    struct tide_json_arena *a = ctx;
    if (p == NULL)
        return arena_malloc(ctx, n);
    if (!in_arena(a, p))
        return realloc(p, n);
    size_t old = block_size(p);
    if (n <= old)
        return p; /* yajl never shrinks; keep the block as it is */
    uintptr_t base = (uintptr_t)a->mem, at = (uintptr_t)p;
    size_t room = base + TIDE_JSON_ARENA_BYTES - at;
    if (at + old + ARENA_REDZONE == base + a->used && n <= room &&
        n + ARENA_REDZONE <= room) { /* the last block: grow it */
        ARENA_UNPOISON(p, n);
        set_block_size(p, n);
        a->used = at + n + ARENA_REDZONE - base;
        return p;
    }
    void *q = arena_malloc(ctx, n);
    if (q != NULL)
        memcpy(q, p, old);
    return q; /* the old block is reclaimed with the arena */
}

void tide_json_arena_init(struct tide_json_arena *a)
{
    a->afs.malloc = arena_malloc;
    a->afs.realloc = arena_realloc;
    a->afs.free = arena_free;
    a->afs.ctx = a;
    a->used = 0;
    ARENA_POISON(a->mem, TIDE_JSON_ARENA_BYTES);
}

void tide_json_arena_reset(struct tide_json_arena *a)
{
    if (a->used > 0)
        ARENA_POISON(a->mem, TIDE_JSON_ARENA_BYTES);
    a->used = 0;
}

void tide_json_arena_finish(struct tide_json_arena *a)
{
    ARENA_UNPOISON(a->mem, TIDE_JSON_ARENA_BYTES);
}
