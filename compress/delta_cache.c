/*
 * compress/delta_cache.c - bounded store of the last sent copy of pages, for DELTA.
 *
 * A flat page -> slot index (4 bytes per page of the VF, sized at create) makes lookups O(1)
 * with no hashing; slots hold page copies in one buffer. Replacement is CLOCK: a hit sets the
 * slot's reference bit, the hand clears bits until it finds a slot not used since its last
 * pass. Freed slots (drop) go on a stack and are reused before anything is evicted.
 * One mutex guards the index, taken once per run of pages: a worker pins the run's slots, reads
 * and updates the copies in place without the lock, and unpins them; a pinned slot is never
 * evicted, and a page is handled by one worker at a time, so nobody else touches those copies.
 * A run none of whose pages has a copy is told without the lock (each page's slot index is an
 * atomic, and only the page's own worker gives it one): two workers taking the lock for every
 * one-page run of pages rewritten whole cost more than sending them.
 */
#include "compress/codec.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define NO_SLOT UINT32_MAX
#define NO_PAGE UINT64_MAX

struct vfmig_delta_cache {
    pthread_mutex_t mu;
    size_t page_size;
    uint64_t npages;
    uint32_t nslots;     /* capacity */
    uint32_t used;       /* slots ever handed out (0..used-1 are live or on the free stack) */
    uint32_t nfree;
    uint32_t hand;
    _Atomic uint32_t *slot_of; /* [npages]; written under mu, read without it by run_is_uncached */
    uint64_t *page_of;   /* [nslots] */
    uint32_t *free_stack;/* [nslots] */
    uint8_t *ref;        /* [nslots] CLOCK reference bits */
    uint8_t *pin;        /* [nslots] 1 while a worker holds the slot (never evicted then) */
    uint8_t *data;       /* nslots * page_size, reserved; faulted in as the cache grows */
    vfmig_delta_cache_stats st;
    _Atomic uint64_t unlocked_misses; /* misses of runs told apart without the lock */
};

/* The copies live in one reserved slab (huge pages where the kernel gives them) that is faulted
 * in as slots are first written, by the worker filling them, outside the lock: first-touch
 * faults cost ~1.5-4 s/GB on a VM. Faulting in chunks under the lock serialized the workers
 * (round 1 of a 1 GiB migration took 200 ms instead of 31 ms filling a fresh 64 MiB cache),
 * and faulting a round's room before it kept the link idle as long (170 ms at 1 Gbit); faults
 * spread over the workers overlap with the link. Huge pages matter in the final pass, which
 * reads every copy once: without them its deltas of a 64 MiB hot set took 7-8 ms instead of
 * 3.5-6 on this VM (a TLB miss per copy, each a two-level walk under virtualization). The
 * cache costs memory only for the set that is re-sent. */
static inline uint32_t slot_get(const vfmig_delta_cache *dc, uint64_t page)
{
    return atomic_load_explicit(&dc->slot_of[page], memory_order_relaxed);
}

static inline void slot_set(vfmig_delta_cache *dc, uint64_t page, uint32_t s)
{
    atomic_store_explicit(&dc->slot_of[page], s, memory_order_relaxed);
}

/* Whether no page of the run has a copy, without the lock. Sound for the caller's own pages: only
 * the worker handling a page gives it a slot (fill_run), and another worker's eviction only ever
 * takes one away, never from a pinned page. */
static bool run_is_uncached(const vfmig_delta_cache *dc, uint64_t first, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++)
        if (slot_get(dc, first + k) != NO_SLOT)
            return false;
    return true;
}

static uint8_t *alloc_slab(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

static void free_slab(uint8_t *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

int vfmig__delta_cache_create(size_t capacity_bytes, size_t page_size, uint64_t npages,
                             vfmig_delta_cache **out)
{
    if (!out || page_size == 0 || npages >= NO_SLOT)
        return VFMIG_EINVAL;
    *out = NULL;
    uint64_t slots = capacity_bytes / page_size;
    if (slots > npages)
        slots = npages; /* more would never be used */
    if (slots >= NO_SLOT)
        slots = NO_SLOT - 1;
    vfmig_delta_cache *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return VFMIG_ENOMEM;
    dc->page_size = page_size;
    dc->npages = npages;
    dc->nslots = (uint32_t)slots;
    dc->slot_of = malloc(npages ? npages * sizeof(*dc->slot_of) : 1);
    dc->page_of = malloc(slots ? slots * sizeof(uint64_t) : 1);
    dc->free_stack = malloc(slots ? slots * sizeof(uint32_t) : 1);
    dc->ref = calloc(slots ? slots : 1, 1);
    dc->pin = calloc(slots ? slots : 1, 1);
    dc->data = slots ? alloc_slab(slots * page_size) : NULL;
    if (!dc->slot_of || !dc->page_of || !dc->free_stack || !dc->ref || !dc->pin || (slots && !dc->data) ||
        pthread_mutex_init(&dc->mu, NULL) != 0) {
        free((void *)dc->slot_of);
        free(dc->page_of);
        free(dc->free_stack);
        free(dc->ref);
        free(dc->pin);
        free_slab(dc->data, slots * page_size);
        free(dc);
        return VFMIG_ENOMEM;
    }
    for (uint64_t i = 0; i < npages; i++)
        atomic_init(&dc->slot_of[i], NO_SLOT);
    atomic_init(&dc->unlocked_misses, 0);
    dc->st.capacity_pages = slots;
    *out = dc;
    return VFMIG_OK;
}

void vfmig__delta_cache_destroy(vfmig_delta_cache *dc)
{
    if (!dc)
        return;
    pthread_mutex_destroy(&dc->mu);
    free((void *)dc->slot_of);
    free(dc->page_of);
    free(dc->free_stack);
    free(dc->ref);
    free(dc->pin);
    free_slab(dc->data, (size_t)dc->nslots * dc->page_size);
    free(dc);
}

/* A slot for a new page: a freed one, a never used one, or the CLOCK victim among slots no
 * worker holds. NO_SLOT when every slot is held. Locked. */
static uint32_t take_slot(vfmig_delta_cache *dc)
{
    if (dc->nfree)
        return dc->free_stack[--dc->nfree];
    if (dc->used < dc->nslots)
        return dc->used++; /* its memory faults in on the worker's first write, unlocked */
    /* Full: two sweeps find a clear, unpinned bit unless everything is pinned. */
    for (uint64_t steps = 0; steps < 2ull * dc->nslots + 1; steps++) {
        uint32_t s = dc->hand;
        dc->hand = dc->hand + 1 == dc->nslots ? 0 : dc->hand + 1;
        if (dc->pin[s])
            continue;
        if (dc->ref[s]) {
            dc->ref[s] = 0;
            continue;
        }
        slot_set(dc, dc->page_of[s], NO_SLOT);
        dc->st.evictions++;
        dc->st.pages_cached--;
        return s;
    }
    return NO_SLOT;
}

static void drop_locked(vfmig_delta_cache *dc, uint64_t page)
{
    uint32_t s = slot_get(dc, page);
    if (s != NO_SLOT) {
        slot_set(dc, page, NO_SLOT);
        dc->page_of[s] = NO_PAGE;
        dc->ref[s] = 0;
        dc->pin[s] = 0;
        dc->free_stack[dc->nfree++] = s;
        dc->st.pages_cached--;
    }
}

/* A fresh slot for missing `page`, pinned; NULL when every slot is pinned. Locked. */
static uint8_t *assign_locked(vfmig_delta_cache *dc, uint64_t page)
{
    uint32_t s = take_slot(dc);
    if (s == NO_SLOT)
        return NULL;
    slot_set(dc, page, s);
    dc->page_of[s] = page;
    dc->st.pages_cached++;
    dc->ref[s] = 0; /* new pages must earn their second chance with a hit */
    dc->pin[s] = 1;
    return dc->data + (size_t)s * dc->page_size;
}

void vfmig__delta_cache_acquire_run(vfmig_delta_cache *dc, uint64_t first, uint32_t n, uint8_t **copy, bool *hit)
{
    for (uint32_t k = 0; k < n; k++) {
        copy[k] = NULL;
        hit[k] = false;
    }
    if (!dc || first >= dc->npages || n > dc->npages - first || dc->nslots == 0)
        return;
    if (run_is_uncached(dc, first, n)) {
        /* Nothing to pin (pages rewritten whole never take copies): no lock for the run. */
        atomic_fetch_add_explicit(&dc->unlocked_misses, n, memory_order_relaxed);
        return;
    }
    pthread_mutex_lock(&dc->mu);
    for (uint32_t k = 0; k < n; k++) {
        uint64_t page = first + k;
        uint32_t s = slot_get(dc, page);
        if (s != NO_SLOT) {
            hit[k] = true;
            dc->ref[s] = 1; /* re-sent: the page is being rewritten, likely again soon */
            dc->st.hits++;
            dc->pin[s] = 1;
            copy[k] = dc->data + (size_t)s * dc->page_size;
        } else {
            dc->st.misses++;
        }
    }
    pthread_mutex_unlock(&dc->mu);
}

void vfmig__delta_cache_fill_run(vfmig_delta_cache *dc, uint64_t first, uint32_t n, const bool *want, uint8_t **copy)
{
    if (!dc || first >= dc->npages || n > dc->npages - first || dc->nslots == 0)
        return;
    pthread_mutex_lock(&dc->mu);
    for (uint32_t k = 0; k < n; k++)
        if (want[k] && !copy[k] && slot_get(dc, first + k) == NO_SLOT)
            copy[k] = assign_locked(dc, first + k);
    pthread_mutex_unlock(&dc->mu);
}

void vfmig__delta_cache_release_run(vfmig_delta_cache *dc, uint64_t first, uint32_t n, const bool *keep)
{
    if (!dc || first >= dc->npages || n > dc->npages - first || dc->nslots == 0 || run_is_uncached(dc, first, n))
        return; /* the caller's pages with copies are pinned, so still there: none, nothing to do */
    pthread_mutex_lock(&dc->mu);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t s = slot_get(dc, first + k);
        if (s == NO_SLOT)
            continue;
        dc->pin[s] = 0;
        if (keep && !keep[k])
            drop_locked(dc, first + k);
    }
    pthread_mutex_unlock(&dc->mu);
}

bool vfmig__delta_cache_get(vfmig_delta_cache *dc, uint64_t page, void *dst)
{
    if (!dc || page >= dc->npages)
        return false;
    pthread_mutex_lock(&dc->mu);
    uint32_t s = slot_get(dc, page);
    bool hit = s != NO_SLOT;
    if (hit) {
        memcpy(dst, dc->data + (size_t)s * dc->page_size, dc->page_size);
        dc->ref[s] = 1;
        dc->st.hits++;
    } else {
        dc->st.misses++;
    }
    pthread_mutex_unlock(&dc->mu);
    return hit;
}

bool vfmig__delta_cache_contains(vfmig_delta_cache *dc, uint64_t page)
{
    if (!dc || page >= dc->npages)
        return false;
    pthread_mutex_lock(&dc->mu);
    bool in = slot_get(dc, page) != NO_SLOT;
    pthread_mutex_unlock(&dc->mu);
    return in;
}

void vfmig__delta_cache_put(vfmig_delta_cache *dc, uint64_t page, const void *src)
{
    if (!dc || page >= dc->npages || dc->nslots == 0)
        return;
    pthread_mutex_lock(&dc->mu);
    uint32_t s = slot_get(dc, page);
    uint8_t *copy;
    if (s == NO_SLOT) {
        if (!(copy = assign_locked(dc, page))) {
            pthread_mutex_unlock(&dc->mu);
            return;
        }
        dc->pin[slot_get(dc, page)] = 0; /* put copies under the lock: nothing to pin */
    } else {
        dc->ref[s] = 1; /* re-sent: the page is being rewritten, likely again soon */
        copy = dc->data + (size_t)s * dc->page_size;
    }
    memcpy(copy, src, dc->page_size);
    pthread_mutex_unlock(&dc->mu);
}

void vfmig__delta_cache_drop(vfmig_delta_cache *dc, uint64_t page)
{
    if (!dc || page >= dc->npages)
        return;
    pthread_mutex_lock(&dc->mu);
    drop_locked(dc, page);
    pthread_mutex_unlock(&dc->mu);
}

void vfmig__delta_cache_get_stats(vfmig_delta_cache *dc, vfmig_delta_cache_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!dc)
        return;
    pthread_mutex_lock(&dc->mu);
    *out = dc->st;
    out->misses += atomic_load_explicit(&dc->unlocked_misses, memory_order_relaxed);
    out->bytes_used = (uint64_t)dc->used * dc->page_size;
    pthread_mutex_unlock(&dc->mu);
}
