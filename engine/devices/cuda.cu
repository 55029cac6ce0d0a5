/* cuda.cu - a CUDA VF: VRAM is a device allocation, dirty pages are found by a hashing kernel on
 * the GPU (see vfmig.h).
 *
 * Dirty pages. Like the host hash tracker, the reference of a page is the hash of the bytes the
 * engine last read from it. A read copies the pages within VRAM into a staging buffer first
 * (device-to-device, ~memory speed), hashes that copy into the reference table, and sends the same
 * copy to the host: the reference is exactly what was sent, whatever the VF wrote meanwhile. A
 * query runs one kernel over VRAM (a warp per page, XXH3-64 as in pagehash.h) that compares each
 * page with its reference and sets bits in a device bitmap; only that bitmap (one bit per page)
 * crosses PCIe. A clear query right after a peek of the same range, VF not paused, reuses the
 * peek's answer (writes in between are found by the next scan; every paused query scans).
 *
 * Transfers. Each worker thread takes a staging slot: a stream, two device and two pinned host
 * buffers. Chunk k's copies run on the GPU while the host copies chunk k-1 out of (or into) the
 * other pinned buffer: double buffering with asynchronous copies.
 *
 * Threads: session-thread ops as the contract says; read/write from any worker (slots are taken
 * under a mutex); the simulated workload (vfmig_cuda_sim) runs its own host thread that launches
 * small write kernels on its own stream and parks, with no kernel in flight, while paused.
 */
#include "vfmig_sim.h"

#include "common/clock.h"
#include "engine/devices/pagehash.h"
#include "transport/wire.h" /* little-endian field helpers for the state blobs */

#include <cuda_runtime.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CU_SLOTS 8
#define CU_IMM_MAGIC 0x4d494d43u /* "CMIM" */
#define CU_MUT_MAGIC 0x554d4d43u /* "CMMU" */

__constant__ vfmig_ph_keys cu_keys;

/* ----------------------------------------------------------------------------------------- */
/* Kernels                                                                                    */
/* ----------------------------------------------------------------------------------------- */
/*
 * XXH3-64 of one page by one warp. Lane l owns accumulator lane i = l % 8 and, in every 1 KiB
 * block, the words l, l+32, l+64, l+96 (coalesced 256-byte loads), all of lane i. Their products
 * add to accumulator i and their values to accumulator i^1; lanes of equal i are summed with two
 * shuffles, the i^1 values fetched from the neighbour lane, then the block's scramble. All lanes
 * return the hash.
 */
static __device__ uint64_t warp_page_hash(const uint8_t *page, uint64_t len, unsigned lane, const vfmig_ph_keys *keys)
{
    const unsigned full = 0xffffffffu, i = lane % 8;
    uint64_t init[8];
    vfmig_ph_acc_init(init);
    uint64_t acc = init[i];
    uint64_t nblocks = len / VFMIG_PH_BLOCK;
    for (uint64_t b = 0; b < nblocks; b++) {
        int last = b + 1 == nblocks;
        uint64_t m, d;
        vfmig_ph_lane_partials(page + b * VFMIG_PH_BLOCK, lane, last, keys, &m, &d);
        m += __shfl_xor_sync(full, m, 8);
        m += __shfl_xor_sync(full, m, 16);
        d += __shfl_xor_sync(full, d, 8);
        d += __shfl_xor_sync(full, d, 16);
        acc += m + __shfl_xor_sync(full, d, 1);
        if (!last)
            acc = vfmig_ph_scramble(acc, keys->scramble[i]);
    }
    uint64_t a[8];
#pragma unroll
    for (int j = 0; j < 8; j++)
        a[j] = __shfl_sync(full, acc, j);
    return vfmig_ph_merge(a, keys, len);
}

/* Pages [first, first+n) of `vram`: hash each; with `bitmap`, set bit (page - first) when it
 * differs from its reference (or has none); with `out`, store the hash at out[page - first]. */
static __global__ void k_scan(const uint8_t *vram, uint64_t first, uint64_t n, uint64_t ps, const uint64_t *ref,
                       const uint8_t *valid, unsigned long long *bitmap, uint64_t *out)
{
    /* Keys in shared memory: the lanes of a warp read different ones at once, which constant
     * memory would serialize. Launched with >= 48 threads a block. */
    __shared__ vfmig_ph_keys keys;
    if (threadIdx.x < sizeof(keys) / 8)
        ((uint64_t *)&keys)[threadIdx.x] = ((const uint64_t *)&cu_keys)[threadIdx.x];
    __syncthreads();
    uint64_t warp = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    uint64_t warps = (uint64_t)gridDim.x * blockDim.x / 32;
    unsigned lane = threadIdx.x % 32;
    for (uint64_t i = warp; i < n; i += warps) {
        uint64_t p = first + i;
        uint64_t h = warp_page_hash(vram + p * ps, ps, lane, &keys);
        if (lane == 0) {
            if (out)
                out[i] = h;
            if (bitmap && (!valid[p] || h != ref[p]))
                atomicOr(&bitmap[i / 64], 1ull << (i % 64));
        }
    }
}

/* References of pages [first, first+n) from their staged copy `stage` (page first at stage[0]). */
static __global__ void k_set_ref(const uint8_t *stage, uint64_t first, uint64_t n, uint64_t ps, uint64_t *ref,
                          uint8_t *valid)
{
    /* Keys in shared memory: the lanes of a warp read different ones at once, which constant
     * memory would serialize. Launched with >= 48 threads a block. */
    __shared__ vfmig_ph_keys keys;
    if (threadIdx.x < sizeof(keys) / 8)
        ((uint64_t *)&keys)[threadIdx.x] = ((const uint64_t *)&cu_keys)[threadIdx.x];
    __syncthreads();
    uint64_t warp = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    uint64_t warps = (uint64_t)gridDim.x * blockDim.x / 32;
    unsigned lane = threadIdx.x % 32;
    for (uint64_t i = warp; i < n; i += warps) {
        uint64_t h = warp_page_hash(stage + i * ps, ps, lane, &keys);
        if (lane == 0) {
            ref[first + i] = h;
            valid[first + i] = 1;
        }
    }
}

static __device__ uint64_t cu_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Content of word w of VRAM, kind by 1 MiB chunk for "mix": zero 40%, texture-like (small values
 * repeating along a row) 25%, tensor-like float32 25%, random 10%. */
static __device__ uint64_t content_word(int content, uint64_t w, uint64_t seed, uint64_t gen)
{
    int kind = content;
    if (content == VFMIG_CONTENT_MIX) {
        uint64_t c = cu_mix(seed ^ (w >> 17)) % 20;
        kind = c < 8 ? VFMIG_CONTENT_ZERO : c < 13 ? VFMIG_CONTENT_TEXTURE : c < 18 ? VFMIG_CONTENT_TENSOR : VFMIG_CONTENT_RANDOM;
    }
    uint64_t r = cu_mix(seed + w * 0x9e3779b97f4a7c15ull + gen);
    switch (kind) {
    case VFMIG_CONTENT_ZERO: return gen ? r & 0x00ff00ff00ff00ffull : 0;
    case VFMIG_CONTENT_TEXTURE: return 0xff000000ff000000ull | ((w / 8) * 0x0001010100010101ull) | (r & 0x0100000001ull);
    case VFMIG_CONTENT_TENSOR: return (r & 0x807fffff807fffffull) | 0x3c0000003c000000ull;
    default: return r;
    }
}

static __global__ void k_fill(uint64_t *vram, uint64_t nwords, int content, uint64_t seed)
{
    for (uint64_t w = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; w < nwords; w += (uint64_t)gridDim.x * blockDim.x)
        vram[w] = content_word(content, w, seed, 0);
}

/* One workload step: block b writes 4 KiB at a random 4 KiB slot of the hot set. */
static __global__ void k_workload(uint64_t *vram, uint64_t hot_slots, int content, uint64_t seed, uint64_t gen)
{
    uint64_t slot = cu_mix(seed ^ (gen * 0x100000001b3ull + blockIdx.x)) % hot_slots;
    uint64_t *p = vram + slot * 512;
    for (unsigned k = threadIdx.x; k < 512; k += blockDim.x)
        p[k] = content_word(content, slot * 512 + k, seed, gen * 4096 + blockIdx.x + 1);
}

static __global__ void k_compare(const uint64_t *a, const uint64_t *b, uint64_t nwords, int *differ)
{
    for (uint64_t w = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; w < nwords; w += (uint64_t)gridDim.x * blockDim.x)
        if (a[w] != b[w]) {
            *differ = 1;
            return;
        }
}

/* ----------------------------------------------------------------------------------------- */
/* The device                                                                                 */
/* ----------------------------------------------------------------------------------------- */
typedef struct cu_slot {
    cudaStream_t st;
    uint8_t *d_stage[2];
    uint8_t *h_stage[2];
    cudaEvent_t ev[2];
    int busy;
} cu_slot;

struct vfmig_cuda {
    vfmig_cuda_config cfg;
    uint8_t *vram;
    uint64_t size, ps, npages, chunk;
    vfmig_range range;
    uint64_t *d_ref;
    uint8_t *d_valid;
    unsigned long long *d_bitmap;
    uint64_t *h_bitmap; /* pinned */
    uint64_t *cache;
    int cached, paused, tracking; /* session thread */
    cudaStream_t scan_st;
    int grid;
    cu_slot slots[CU_SLOTS];
    pthread_mutex_t slot_m;
    pthread_cond_t slot_cv;
    pthread_mutex_t lock; /* stats */
    vfmig_tracking_stats st;
};

static int cu_fail(cudaError_t e, const char *what, char *err, size_t errlen)
{
    if (err && errlen)
        snprintf(err, errlen, "CUDA: %s: %s", what, cudaGetErrorString(e));
    return e == cudaErrorMemoryAllocation ? VFMIG_ENOMEM : e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? VFMIG_ENODEV : VFMIG_EDEVICE;
}

#define CU_TRY(call)                                                                                \
    do {                                                                                            \
        if ((call) != cudaSuccess)                                                                  \
            return VFMIG_EDEVICE;                                                                   \
    } while (0)

static cu_slot *slot_take(vfmig_cuda *c)
{
    pthread_mutex_lock(&c->slot_m);
    for (;;) {
        for (int i = 0; i < CU_SLOTS; i++)
            if (!c->slots[i].busy) {
                c->slots[i].busy = 1;
                pthread_mutex_unlock(&c->slot_m);
                return &c->slots[i];
            }
        pthread_cond_wait(&c->slot_cv, &c->slot_m);
    }
}

static void slot_give(vfmig_cuda *c, cu_slot *s)
{
    pthread_mutex_lock(&c->slot_m);
    s->busy = 0;
    pthread_cond_signal(&c->slot_cv);
    pthread_mutex_unlock(&c->slot_m);
}

static unsigned blocks_for(uint64_t pages)
{
    uint64_t b = (pages + 7) / 8; /* 8 warps (256 threads) a block */
    return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

/* Pages wholly inside [rel, rel+len): first and count. */
static void whole_pages(const vfmig_cuda *c, uint64_t rel, uint64_t len, uint64_t *first, uint64_t *n)
{
    uint64_t p0 = (rel + c->ps - 1) / c->ps, p1 = (rel + len) / c->ps;
    *first = p0;
    *n = p1 > p0 ? p1 - p0 : 0;
}

/* Pages touched by [rel, rel+len) lose their reference (engine writes, partial reads). */
static cudaError_t forget(vfmig_cuda *c, uint64_t rel, uint64_t len, cudaStream_t st)
{
    if (!len)
        return cudaSuccess;
    uint64_t p0 = rel / c->ps, p1 = (rel + len - 1) / c->ps;
    return cudaMemsetAsync(c->d_valid + p0, 0, (size_t)(p1 - p0 + 1), st);
}

static int op_read(void *dev, uint64_t offset, void *dst, size_t len)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (offset > c->size || len > c->size - offset || (len && !dst))
        return VFMIG_EINVAL;
    if (cudaSetDevice(c->cfg.gpu) != cudaSuccess)
        return VFMIG_EDEVICE;
    cu_slot *s = slot_take(c);
    cudaError_t e = forget(c, offset, len, s->st);
    uint8_t *out_prev[2] = {NULL, NULL};
    size_t n_prev[2] = {0, 0};
    for (uint64_t done = 0, k = 0; e == cudaSuccess && done < len; k++) {
        int b = (int)(k & 1);
        if (out_prev[b]) { /* the copy two chunks back used this buffer: finish it */
            if ((e = cudaEventSynchronize(s->ev[b])) != cudaSuccess)
                break;
            memcpy(out_prev[b], s->h_stage[b], n_prev[b]);
        }
        uint64_t n = len - done < c->chunk ? len - done : c->chunk;
        uint64_t rel = offset + done, first, np;
        e = cudaMemcpyAsync(s->d_stage[b], c->vram + rel, (size_t)n, cudaMemcpyDeviceToDevice, s->st);
        whole_pages(c, rel, n, &first, &np);
        if (e == cudaSuccess && np) {
            k_set_ref<<<blocks_for(np), 256, 0, s->st>>>(s->d_stage[b] + (first * c->ps - rel), first, np, c->ps,
                                                        c->d_ref, c->d_valid);
            e = cudaGetLastError();
        }
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(s->h_stage[b], s->d_stage[b], (size_t)n, cudaMemcpyDeviceToHost, s->st);
        if (e == cudaSuccess)
            e = cudaEventRecord(s->ev[b], s->st);
        out_prev[b] = (uint8_t *)dst + done;
        n_prev[b] = (size_t)n;
        done += n;
    }
    /* The last chunk of each buffer is still to be copied out. */
    if (e == cudaSuccess && (e = cudaStreamSynchronize(s->st)) == cudaSuccess)
        for (int b = 0; b < 2; b++)
            if (out_prev[b])
                memcpy(out_prev[b], s->h_stage[b], n_prev[b]);
    if (e != cudaSuccess)
        cudaStreamSynchronize(s->st);
    slot_give(c, s);
    return e == cudaSuccess ? VFMIG_OK : VFMIG_EDEVICE;
}

static int op_write(void *dev, uint64_t offset, const void *src, size_t len)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (offset > c->size || len > c->size - offset || (len && !src))
        return VFMIG_EINVAL;
    if (cudaSetDevice(c->cfg.gpu) != cudaSuccess)
        return VFMIG_EDEVICE;
    cu_slot *s = slot_take(c);
    cudaError_t e = forget(c, offset, len, s->st);
    int used[2] = {0, 0};
    for (uint64_t done = 0, k = 0; e == cudaSuccess && done < len; k++) {
        int b = (int)(k & 1);
        if (used[b] && (e = cudaEventSynchronize(s->ev[b])) != cudaSuccess)
            break;
        uint64_t n = len - done < c->chunk ? len - done : c->chunk;
        memcpy(s->h_stage[b], (const uint8_t *)src + done, (size_t)n); /* while the other chunk moves */
        e = cudaMemcpyAsync(c->vram + offset + done, s->h_stage[b], (size_t)n, cudaMemcpyHostToDevice, s->st);
        if (e == cudaSuccess)
            e = cudaEventRecord(s->ev[b], s->st);
        used[b] = 1;
        done += n;
    }
    cudaError_t e2 = cudaStreamSynchronize(s->st);
    slot_give(c, s);
    return e == cudaSuccess && e2 == cudaSuccess ? VFMIG_OK : VFMIG_EDEVICE;
}

static void record_scan(vfmig_cuda *c, uint64_t wall, uint64_t cpu, uint64_t bytes, uint64_t dirty)
{
    pthread_mutex_lock(&c->lock);
    c->st.scans++;
    c->st.last_ns = wall;
    c->st.last_cpu_ns = cpu;
    c->st.last_bytes = bytes;
    c->st.last_dirty = dirty;
    c->st.total_ns += wall;
    c->st.total_cpu_ns += cpu;
    c->st.total_bytes += bytes;
    c->st.pages_hashed += bytes / c->ps;
    c->st.cpu_ns_per_gib = bytes ? (double)cpu * (double)(1ull << 30) / (double)bytes : 0;
    pthread_mutex_unlock(&c->lock);
}

static int op_query_dirty(void *dev, uint32_t range, uint64_t first, uint64_t npages, uint64_t *bitmap, int clear)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (!c->tracking)
        return VFMIG_ESTATE;
    if (range != 0 || first > c->npages || npages > c->npages - first || (npages && !bitmap))
        return VFMIG_EINVAL;
    if (npages == 0)
        return VFMIG_OK;
    uint64_t words = (npages + 63) / 64;
    memset(bitmap, 0, (size_t)words * 8);
    if (clear && c->cached && !c->paused) {
        c->cached = 0;
        for (uint64_t i = 0; i < npages; i++) {
            uint64_t p = first + i;
            if (c->cache[p / 64] >> (p % 64) & 1)
                bitmap[i / 64] |= 1ull << (i % 64);
        }
        return VFMIG_OK;
    }
    c->cached = 0;
    uint64_t t0 = vfmig__now_ns(), c0 = vfmig__thread_cpu_ns();
    CU_TRY(cudaSetDevice(c->cfg.gpu));
    CU_TRY(cudaMemsetAsync(c->d_bitmap, 0, (size_t)words * 8, c->scan_st));
    k_scan<<<c->grid, 256, 0, c->scan_st>>>(c->vram, first, npages, c->ps, c->d_ref, c->d_valid, c->d_bitmap, NULL);
    CU_TRY(cudaGetLastError());
    CU_TRY(cudaMemcpyAsync(c->h_bitmap, c->d_bitmap, (size_t)words * 8, cudaMemcpyDeviceToHost, c->scan_st));
    CU_TRY(cudaStreamSynchronize(c->scan_st));
    memcpy(bitmap, c->h_bitmap, (size_t)words * 8);
    uint64_t dirty = 0;
    for (uint64_t w = 0; w < words; w++)
        dirty += (uint64_t)__builtin_popcountll(bitmap[w]);
    record_scan(c, vfmig__now_ns() - t0, vfmig__thread_cpu_ns() - c0, npages * c->ps, dirty);
    if (!clear && first == 0 && npages == c->npages) {
        memcpy(c->cache, bitmap, (size_t)words * 8);
        c->cached = 1;
    }
    return VFMIG_OK;
}

static int op_prepare(void *dev, vfmig_role role)
{
    (void)dev;
    return role == VFMIG_ROLE_SOURCE || role == VFMIG_ROLE_TARGET ? VFMIG_OK : VFMIG_EINVAL;
}

static int op_end(void *dev)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (c->cfg.cb.throttle)
        (void)c->cfg.cb.throttle(c->cfg.cb.user, 100);
    return VFMIG_OK;
}

/* Nothing read yet: every page dirty until read whole. */
static int op_start_tracking(void *dev)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    CU_TRY(cudaSetDevice(c->cfg.gpu));
    CU_TRY(cudaMemset(c->d_valid, 0, (size_t)c->npages));
    c->cached = 0;
    c->tracking = 1;
    return VFMIG_OK;
}

static int op_stop_tracking(void *dev)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    c->tracking = 0;
    c->cached = 0;
    return VFMIG_OK;
}

static int op_pause(void *dev)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    int rc = c->cfg.cb.pause(c->cfg.cb.user);
    c->paused = 1;
    c->cached = 0;
    return rc;
}

static int op_resume(void *dev)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    int rc = c->cfg.cb.resume(c->cfg.cb.user);
    if (rc == VFMIG_OK)
        c->paused = 0;
    return rc;
}

static int op_save_immutable(void *dev, void *buf, uint64_t *size)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (!size)
        return VFMIG_EINVAL;
    if (buf) {
        if (*size < 32)
            return VFMIG_EINVAL;
        vfmig_put_u64((uint8_t *)buf, CU_IMM_MAGIC);
        vfmig_put_u64((uint8_t *)buf + 8, c->cfg.state_version);
        vfmig_put_u64((uint8_t *)buf + 16, c->size);
        vfmig_put_u64((uint8_t *)buf + 24, c->ps);
    }
    *size = 32;
    return VFMIG_OK;
}

static int op_restore_immutable(void *dev, const void *buf, uint64_t size)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    const uint8_t *b = (const uint8_t *)buf;
    if (!b || size != 32 || vfmig_get_u64(b) != CU_IMM_MAGIC)
        return VFMIG_EINVAL;
    if (vfmig_get_u64(b + 8) != c->cfg.state_version || vfmig_get_u64(b + 16) != c->size || vfmig_get_u64(b + 24) != c->ps)
        return VFMIG_EINCOMPAT;
    return VFMIG_OK;
}

static int op_save_mutable(void *dev, void *buf, uint64_t *size)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (c->cfg.cb.save_mutable)
        return c->cfg.cb.save_mutable(c->cfg.cb.user, buf, size);
    if (!size)
        return VFMIG_EINVAL;
    if (buf) {
        if (*size < 16)
            return VFMIG_EINVAL;
        vfmig_put_u64((uint8_t *)buf, CU_MUT_MAGIC);
        vfmig_put_u64((uint8_t *)buf + 8, c->size);
    }
    *size = 16;
    return VFMIG_OK;
}

static int op_restore_mutable(void *dev, const void *buf, uint64_t size)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (c->cfg.cb.restore_mutable)
        return c->cfg.cb.restore_mutable(c->cfg.cb.user, buf, size);
    const uint8_t *b = (const uint8_t *)buf;
    if (!b || size != 16 || vfmig_get_u64(b) != CU_MUT_MAGIC || vfmig_get_u64(b + 8) != c->size)
        return VFMIG_EINVAL;
    return VFMIG_OK;
}

static int op_throttle(void *dev, unsigned percent)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    return c->cfg.cb.throttle(c->cfg.cb.user, percent);
}

static int op_tracking_cost(void *dev, uint64_t *ns)
{
    vfmig_cuda *c = (vfmig_cuda *)dev;
    if (!ns)
        return VFMIG_EINVAL;
    pthread_mutex_lock(&c->lock);
    *ns = c->st.last_ns;
    pthread_mutex_unlock(&c->lock);
    return VFMIG_OK;
}

static vfmig_device_ops make_ops(int with_throttle)
{
    vfmig_device_ops o;
    memset(&o, 0, sizeof o);
    o.prepare = op_prepare;
    o.end = op_end;
    o.start_tracking = op_start_tracking;
    o.stop_tracking = op_stop_tracking;
    o.query_dirty = op_query_dirty;
    o.read = op_read;
    o.write = op_write;
    o.pause = op_pause;
    o.resume = op_resume;
    o.save_immutable = op_save_immutable;
    o.save_mutable = op_save_mutable;
    o.restore_immutable = op_restore_immutable;
    o.restore_mutable = op_restore_mutable;
    o.throttle = with_throttle ? op_throttle : NULL;
    return o;
}

static const vfmig_device_ops cu_ops = make_ops(1);
static const vfmig_device_ops cu_ops_nothrottle = make_ops(0);

/* ----------------------------------------------------------------------------------------- */
/* Public API                                                                                 */
/* ----------------------------------------------------------------------------------------- */
extern "C" {

int vfmig_cuda_available(char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (err && errlen)
            snprintf(err, errlen, "CUDA: no usable GPU (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
        return 0;
    }
    if (n < 1) {
        if (err && errlen)
            snprintf(err, errlen, "CUDA: no GPU found");
        return 0;
    }
    return 1;
}

static int create_common(const vfmig_cuda_config *cfg, uint8_t *vram, vfmig_cuda **out, char *err, size_t errlen);

int vfmig_cuda_create(const vfmig_cuda_config *cfg, vfmig_cuda **out, char *err, size_t errlen)
{
    if (!cfg || !out || !cfg->dptr) {
        if (err && errlen)
            snprintf(err, errlen, "CUDA: no device pointer given");
        return VFMIG_EINVAL;
    }
    return create_common(cfg, (uint8_t *)cfg->dptr, out, err, errlen);
}

static int create_common(const vfmig_cuda_config *cfg, uint8_t *vram, vfmig_cuda **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!vfmig_cuda_available(err, errlen))
        return VFMIG_ENODEV;
    uint64_t ps = cfg->page_size;
    if (ps < VFMIG_MIN_PAGE_SIZE || ps > VFMIG_MAX_PAGE_SIZE || (ps & (ps - 1)) || !cfg->size || cfg->size % ps ||
        !cfg->cb.pause || !cfg->cb.resume) {
        if (err && errlen)
            snprintf(err, errlen, "CUDA: the VRAM must be a whole number of tracking pages (power of two, 4K..2M), "
                                  "and pause/resume callbacks are required");
        return VFMIG_EINVAL;
    }
    cudaError_t e = cudaSetDevice(cfg->gpu);
    if (e != cudaSuccess)
        return cu_fail(e, "cudaSetDevice", err, errlen);
    vfmig_ph_keys keys;
    vfmig_ph_keys_init(&keys, vfmig_ph_secret_host);
    if ((e = cudaMemcpyToSymbol(cu_keys, &keys, sizeof keys)) != cudaSuccess)
        return cu_fail(e, "cudaMemcpyToSymbol", err, errlen);
    vfmig_cuda *c = (vfmig_cuda *)calloc(1, sizeof *c);
    if (!c)
        return VFMIG_ENOMEM;
    c->cfg = *cfg;
    c->vram = vram;
    c->size = cfg->size;
    c->ps = ps;
    c->npages = cfg->size / ps;
    c->chunk = cfg->staging_bytes >= ps ? cfg->staging_bytes / ps * ps : ps;
    c->range.offset = 0;
    c->range.size = cfg->size;
    c->st.source = VFMIG_DIRTY_CUDA_HASH;
    pthread_mutex_init(&c->slot_m, NULL);
    pthread_cond_init(&c->slot_cv, NULL);
    pthread_mutex_init(&c->lock, NULL);
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, cfg->gpu);
    c->grid = (sms > 0 ? sms : 16) * 8;
    uint64_t words = (c->npages + 63) / 64;
    const char *what = "cudaMalloc";
    e = cudaMalloc((void **)&c->d_ref, (size_t)c->npages * 8);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&c->d_valid, (size_t)c->npages);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&c->d_bitmap, (size_t)words * 8);
    if (e == cudaSuccess) {
        what = "cudaMallocHost";
        e = cudaMallocHost((void **)&c->h_bitmap, (size_t)words * 8);
    }
    if (e == cudaSuccess) {
        what = "cudaStreamCreate";
        e = cudaStreamCreateWithFlags(&c->scan_st, cudaStreamNonBlocking);
    }
    for (int i = 0; e == cudaSuccess && i < CU_SLOTS; i++) {
        cu_slot *s = &c->slots[i];
        e = cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking);
        for (int b = 0; e == cudaSuccess && b < 2; b++) {
            if ((e = cudaMalloc((void **)&s->d_stage[b], (size_t)c->chunk)) == cudaSuccess &&
                (e = cudaMallocHost((void **)&s->h_stage[b], (size_t)c->chunk)) == cudaSuccess)
                e = cudaEventCreateWithFlags(&s->ev[b], cudaEventDisableTiming);
        }
    }
    c->cache = (uint64_t *)calloc((size_t)words, 8);
    if (e != cudaSuccess || !c->cache) {
        int rc = e != cudaSuccess ? cu_fail(e, what, err, errlen) : VFMIG_ENOMEM;
        vfmig_cuda_destroy(c);
        return rc;
    }
    *out = c;
    return VFMIG_OK;
}

void vfmig_cuda_destroy(vfmig_cuda *c)
{
    if (!c)
        return;
    cudaSetDevice(c->cfg.gpu);
    for (int i = 0; i < CU_SLOTS; i++) {
        cu_slot *s = &c->slots[i];
        if (s->st)
            cudaStreamSynchronize(s->st);
        for (int b = 0; b < 2; b++) {
            if (s->d_stage[b])
                cudaFree(s->d_stage[b]);
            if (s->h_stage[b])
                cudaFreeHost(s->h_stage[b]);
            if (s->ev[b])
                cudaEventDestroy(s->ev[b]);
        }
        if (s->st)
            cudaStreamDestroy(s->st);
    }
    if (c->scan_st)
        cudaStreamDestroy(c->scan_st);
    if (c->d_ref)
        cudaFree(c->d_ref);
    if (c->d_valid)
        cudaFree(c->d_valid);
    if (c->d_bitmap)
        cudaFree(c->d_bitmap);
    if (c->h_bitmap)
        cudaFreeHost(c->h_bitmap);
    free(c->cache);
    pthread_mutex_destroy(&c->slot_m);
    pthread_cond_destroy(&c->slot_cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void vfmig_cuda_device(vfmig_cuda *c, vfmig_device *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    out->size = sizeof(*out);
    out->ops_size = sizeof(vfmig_device_ops);
    out->ops = c->cfg.cb.throttle ? &cu_ops : &cu_ops_nothrottle;
    out->dev = c;
    out->page_size = c->ps;
    out->nranges = 1;
    out->ranges = &c->range;
    out->tracking_cost = op_tracking_cost;
}

void vfmig_cuda_get_stats(const vfmig_cuda *c, vfmig_tracking_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->source = VFMIG_DIRTY_CUDA_HASH;
    if (!c)
        return;
    vfmig_cuda *m = (vfmig_cuda *)c;
    pthread_mutex_lock(&m->lock);
    *out = m->st;
    pthread_mutex_unlock(&m->lock);
}

int vfmig_cuda_hash_pages(vfmig_cuda *c, uint64_t offset, uint64_t npages, uint64_t *hashes)
{
    if (!c || !hashes || offset % c->ps || offset / c->ps > c->npages || npages > c->npages - offset / c->ps)
        return VFMIG_EINVAL;
    if (!npages)
        return VFMIG_OK;
    uint64_t *d_out;
    CU_TRY(cudaSetDevice(c->cfg.gpu));
    CU_TRY(cudaMalloc((void **)&d_out, (size_t)npages * 8));
    k_scan<<<c->grid, 256, 0, c->scan_st>>>(c->vram, offset / c->ps, npages, c->ps, NULL, NULL, NULL, d_out);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(hashes, d_out, (size_t)npages * 8, cudaMemcpyDeviceToHost, c->scan_st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->scan_st);
    cudaFree(d_out);
    return e == cudaSuccess ? VFMIG_OK : VFMIG_EDEVICE;
}

int vfmig_cuda_measure(vfmig_cuda *c, double *hash_gbps, double *copy_gbps)
{
    if (!c || !hash_gbps || !copy_gbps)
        return VFMIG_EINVAL;
    CU_TRY(cudaSetDevice(c->cfg.gpu));
    uint64_t copy_bytes = c->size < (1ull << 30) ? c->size : (1ull << 30);
    uint64_t *d_out = NULL;
    uint8_t *d_copy = NULL;
    cudaEvent_t a, b;
    CU_TRY(cudaEventCreate(&a));
    CU_TRY(cudaEventCreate(&b));
    cudaError_t e = cudaMalloc((void **)&d_out, (size_t)c->npages * 8);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&d_copy, (size_t)copy_bytes);
    float best_h = 1e30f, best_c = 1e30f;
    for (int rep = 0; e == cudaSuccess && rep < 5; rep++) {
        float ms = 0;
        cudaEventRecord(a, c->scan_st);
        k_scan<<<c->grid, 256, 0, c->scan_st>>>(c->vram, 0, c->npages, c->ps, NULL, NULL, NULL, d_out);
        cudaEventRecord(b, c->scan_st);
        if ((e = cudaEventSynchronize(b)) != cudaSuccess)
            break;
        cudaEventElapsedTime(&ms, a, b);
        if (ms < best_h)
            best_h = ms;
        cudaEventRecord(a, c->scan_st);
        cudaMemcpyAsync(d_copy, c->vram, (size_t)copy_bytes, cudaMemcpyDeviceToDevice, c->scan_st);
        cudaEventRecord(b, c->scan_st);
        if ((e = cudaEventSynchronize(b)) != cudaSuccess)
            break;
        cudaEventElapsedTime(&ms, a, b);
        if (ms < best_c)
            best_c = ms;
    }
    if (d_out)
        cudaFree(d_out);
    if (d_copy)
        cudaFree(d_copy);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    if (e != cudaSuccess)
        return VFMIG_EDEVICE;
    *hash_gbps = (double)c->size / (best_h * 1e6);
    *copy_gbps = (double)copy_bytes / (best_c * 1e6);
    return VFMIG_OK;
}

/* ----------------------------------------------------------------------------------------- */
/* The CUDA VF of the CLI and benchmarks: own allocation, workload kernel, pause/resume        */
/* ----------------------------------------------------------------------------------------- */
struct vfmig_cuda_sim {
    vfmig_cuda *dev;
    uint8_t *vram;
    int gpu, content;
    uint64_t rate, hot_slots, seed, gen;
    cudaStream_t st;
    pthread_t tid;
    int thread_up;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int pause_req, parked, quit, started; /* under m */
    uint64_t writes;                       /* under m */
    uint8_t *restored;
    uint64_t restored_size;
};

/* Paced like the simulated VF: every millisecond, rate * dt bytes of 4 KiB writes in one launch,
 * waited for before the pause flag is looked at again, so a parked workload has nothing in flight. */
static void *sim_main(void *arg)
{
    vfmig_cuda_sim *s = (vfmig_cuda_sim *)arg;
    cudaSetDevice(s->gpu);
    uint64_t last = vfmig__now_ns();
    double credit = 0;
    pthread_mutex_lock(&s->m);
    while (!s->quit) {
        if (s->pause_req) {
            s->parked = 1;
            pthread_cond_broadcast(&s->cv);
            while (s->pause_req && !s->quit)
                pthread_cond_wait(&s->cv, &s->m);
            s->parked = 0;
            last = vfmig__now_ns();
            credit = 0;
            continue;
        }
        uint64_t t = vfmig__now_ns();
        credit += (double)s->rate * (double)(t - last) * 1e-9;
        last = t;
        if (credit > (double)s->rate * 4e-3 + 4096)
            credit = (double)s->rate * 4e-3 + 4096;
        unsigned n = (unsigned)(credit / 4096);
        uint64_t gen = ++s->gen;
        pthread_mutex_unlock(&s->m);
        if (n) {
            k_workload<<<n, 128, 0, s->st>>>((uint64_t *)s->vram, s->hot_slots, s->content, s->seed, gen);
            cudaStreamSynchronize(s->st);
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&s->m);
        s->writes += n;
        credit -= (double)n * 4096;
    }
    s->parked = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->m);
    return NULL;
}

static int sim_pause(void *u)
{
    vfmig_cuda_sim *s = (vfmig_cuda_sim *)u;
    pthread_mutex_lock(&s->m);
    s->pause_req = 1;
    while (s->thread_up && !s->parked)
        pthread_cond_wait(&s->cv, &s->m);
    pthread_mutex_unlock(&s->m);
    return VFMIG_OK;
}

static int sim_start_locked(vfmig_cuda_sim *s)
{
    s->started = 1;
    if (s->thread_up || s->rate == 0)
        return VFMIG_OK;
    s->parked = 0;
    if (pthread_create(&s->tid, NULL, sim_main, s) != 0)
        return VFMIG_EDEVICE;
    s->thread_up = 1;
    return VFMIG_OK;
}

static int sim_resume(void *u)
{
    vfmig_cuda_sim *s = (vfmig_cuda_sim *)u;
    pthread_mutex_lock(&s->m);
    s->pause_req = 0;
    pthread_cond_broadcast(&s->cv);
    int rc = sim_start_locked(s);
    pthread_mutex_unlock(&s->m);
    return rc;
}

static int sim_save_mut(void *u, void *buf, uint64_t *size)
{
    vfmig_cuda_sim *s = (vfmig_cuda_sim *)u;
    if (!size)
        return VFMIG_EINVAL;
    if (buf) {
        if (*size < 24)
            return VFMIG_EINVAL;
        pthread_mutex_lock(&s->m);
        vfmig_put_u64((uint8_t *)buf, CU_MUT_MAGIC);
        vfmig_put_u64((uint8_t *)buf + 8, s->writes);
        vfmig_put_u64((uint8_t *)buf + 16, s->gen);
        pthread_mutex_unlock(&s->m);
    }
    *size = 24;
    return VFMIG_OK;
}

static int sim_restore_mut(void *u, const void *buf, uint64_t size)
{
    vfmig_cuda_sim *s = (vfmig_cuda_sim *)u;
    if (!buf || size != 24 || vfmig_get_u64((const uint8_t *)buf) != CU_MUT_MAGIC)
        return VFMIG_EINVAL;
    uint8_t *copy = (uint8_t *)malloc((size_t)size);
    if (!copy)
        return VFMIG_ENOMEM;
    memcpy(copy, buf, (size_t)size);
    free(s->restored);
    s->restored = copy;
    s->restored_size = size;
    return VFMIG_OK;
}

int vfmig_cuda_sim_create(const vfmig_cuda_config *cfg, int content, uint64_t dirty_rate, uint64_t hot_bytes,
                          uint64_t seed, vfmig_cuda_sim **out, char *err, size_t errlen)
{
    if (!cfg || !out || content < VFMIG_CONTENT_ZERO || content > VFMIG_CONTENT_MIX || !cfg->size ||
        cfg->size % 4096) {
        if (err && errlen)
            snprintf(err, errlen, "CUDA: bad simulated VF configuration");
        return VFMIG_EINVAL;
    }
    *out = NULL;
    if (!vfmig_cuda_available(err, errlen))
        return VFMIG_ENODEV;
    vfmig_cuda_sim *s = (vfmig_cuda_sim *)calloc(1, sizeof *s);
    if (!s)
        return VFMIG_ENOMEM;
    s->gpu = cfg->gpu;
    s->content = content;
    s->rate = dirty_rate;
    s->seed = seed;
    uint64_t hot = hot_bytes && hot_bytes < cfg->size ? hot_bytes : cfg->size;
    s->hot_slots = hot / 4096 ? hot / 4096 : 1;
    pthread_mutex_init(&s->m, NULL);
    pthread_cond_init(&s->cv, NULL);
    cudaError_t e = cudaSetDevice(cfg->gpu);
    const char *what = "cudaMalloc (VRAM)";
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&s->vram, (size_t)cfg->size);
    if (e == cudaSuccess) {
        what = "cudaStreamCreate";
        e = cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking);
    }
    if (e == cudaSuccess) {
        what = "filling VRAM";
        k_fill<<<1024, 256, 0, s->st>>>((uint64_t *)s->vram, cfg->size / 8, content, seed);
        e = cudaGetLastError();
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(s->st);
    }
    if (e != cudaSuccess) {
        int rc = cu_fail(e, what, err, errlen);
        vfmig_cuda_sim_destroy(s);
        return rc;
    }
    vfmig_cuda_config c = *cfg;
    c.dptr = s->vram;
    c.cb.pause = sim_pause;
    c.cb.resume = sim_resume;
    c.cb.save_mutable = sim_save_mut;
    c.cb.restore_mutable = sim_restore_mut;
    c.cb.throttle = NULL;
    c.cb.user = s;
    int rc = create_common(&c, s->vram, &s->dev, err, errlen);
    if (rc) {
        vfmig_cuda_sim_destroy(s);
        return rc;
    }
    *out = s;
    return VFMIG_OK;
}

void vfmig_cuda_sim_destroy(vfmig_cuda_sim *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->m);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    int up = s->thread_up;
    pthread_mutex_unlock(&s->m);
    if (up)
        pthread_join(s->tid, NULL);
    vfmig_cuda_destroy(s->dev);
    cudaSetDevice(s->gpu);
    if (s->st)
        cudaStreamDestroy(s->st);
    if (s->vram)
        cudaFree(s->vram);
    free(s->restored);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->m);
    free(s);
}

vfmig_cuda *vfmig_cuda_sim_device(vfmig_cuda_sim *s)
{
    return s ? s->dev : NULL;
}

int vfmig_cuda_sim_start(vfmig_cuda_sim *s)
{
    if (!s)
        return VFMIG_EINVAL;
    pthread_mutex_lock(&s->m);
    int rc = sim_start_locked(s);
    pthread_mutex_unlock(&s->m);
    return rc;
}

int vfmig_cuda_sim_compare(vfmig_cuda_sim *a, vfmig_cuda_sim *b)
{
    if (!a || !b || a->dev->size != b->dev->size || a->gpu != b->gpu)
        return VFMIG_EINVAL;
    if (!b->restored)
        return 0; /* the target never got the mutable state */
    int *d_flag, h_flag = 0;
    CU_TRY(cudaSetDevice(a->gpu));
    CU_TRY(cudaMalloc((void **)&d_flag, sizeof(int)));
    cudaError_t e = cudaMemset(d_flag, 0, sizeof(int));
    if (e == cudaSuccess) {
        k_compare<<<1024, 256>>>((const uint64_t *)a->vram, (const uint64_t *)b->vram, a->dev->size / 8, d_flag);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess)
        e = cudaMemcpy(&h_flag, d_flag, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(d_flag);
    if (e != cudaSuccess)
        return VFMIG_EDEVICE;
    return h_flag ? 0 : 1;
}

} /* extern "C" */
