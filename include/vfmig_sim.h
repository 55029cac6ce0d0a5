/*
 * vfmig_sim.h - the built-in simulated VF: VRAM in host memory, a live workload of writer
 * threads, dirty bits set as the hardware would, real pause/resume, versioned state blobs. What
 * the CLI, the tests and the benchmarks migrate; a daemon with a real device does not need it.
 * Same conventions as vfmig.h (included).
 */
#ifndef VFMIG_SIM_H
#define VFMIG_SIM_H

#include "vfmig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------- */
/* Built-in simulated VF: VRAM in host memory, a live workload of writer threads, dirty bits    */
/* set as the hardware would, real pause/resume, versioned state blobs.                          */
/* ------------------------------------------------------------------------------------------- */
typedef enum vfmig_pattern {
    VFMIG_PATTERN_UNIFORM = 0, /* any page, uniformly */
    VFMIG_PATTERN_HOT = 1,     /* a hot set of hot_bytes at the start of VRAM */
    VFMIG_PATTERN_SEQ = 2,     /* a sequential sweep over all pages, wrapping */
    VFMIG_PATTERN_HOT_SEQ = 3  /* a sweep over the hot set in page order, one write per page per
                                  pass, wrapping: how a GPU kernel rewrites its buffers */
} vfmig_pattern;

typedef enum vfmig_content {
    VFMIG_CONTENT_ZERO = 0,
    VFMIG_CONTENT_TEXTURE = 1, /* smooth image-like 8-bit RGBA tiles with noise */
    VFMIG_CONTENT_TENSOR = 2,  /* float32 values of a few magnitudes */
    VFMIG_CONTENT_RANDOM = 3,  /* incompressible */
    VFMIG_CONTENT_MIX = 4      /* regions of each of the above (zero 40%, texture 25%, tensor 25%, random 10%) */
} vfmig_content;

/** Called by vfmig_simvf_create while it fills VRAM with the configured content (first touch of
 *  every page: seconds for a few GiB), on the thread that called it: first with done = 0, then
 *  every 10 ms or so, last with done = total. `total` is vram_bytes. Must not call back into the
 *  sim being created (there is none yet). */
typedef void (*vfmig_simvf_setup_cb)(void *user, uint64_t bytes_done, uint64_t bytes_total);

typedef struct vfmig_simvf_config {
    /* sizeof(vfmig_simvf_config) as the caller compiled it; vfmig_simvf_config_init sets it.
     * vfmig_simvf_create reads only the fields within it (those beyond are taken as zero/NULL)
     * and refuses a size smaller than this struct had when the field came (up to setup_user). */
    uint32_t size;
    uint64_t vram_bytes;       /* total VRAM, split into nranges equal ranges; default 1 GiB */
    uint64_t page_size;        /* tracking page; default 64 KiB */
    uint32_t nranges;          /* default 1; ranges are placed with gaps between them */
    uint64_t dirty_rate;       /* bytes per second the workload writes; 0 = idle */
    vfmig_pattern pattern;     /* default VFMIG_PATTERN_UNIFORM */
    uint64_t hot_bytes;        /* hot set for VFMIG_PATTERN_HOT / HOT_SEQ; default 64 MiB, 0 or
                                  > VRAM = all */
    vfmig_content content;     /* default VFMIG_CONTENT_MIX */
    uint32_t writers;          /* workload threads; default 1 */
    uint32_t write_bytes;      /* bytes per write operation, 8 .. page size (larger is capped at
                                  the page size); default 4096. The rate stays dirty_rate bytes/s,
                                  so 8-byte writes at 15.2 MB/s are 1.9 M writes/s */
    uint64_t immutable_bytes;  /* immutable state blob size; default 4 KiB (at least 64) */
    uint64_t mutable_bytes;    /* mutable state blob size; default 64 KiB (at least 64) */
    uint32_t state_version;    /* stamped in the immutable blob; restore refuses a mismatch */
    uint64_t seed;             /* content and workload seed; same seed = same initial image */
    /* Fields are only appended from here on (see size). */
    vfmig_simvf_setup_cb setup_progress; /* optional: progress of the initial fill; NULL = none */
    void *setup_user;                    /* passed back to setup_progress */
} vfmig_simvf_config;

/*
 * Behaviour of the simulated device beyond the contract: resume() starts the workload when it is
 * not running and the rate is above 0 (a migrated target carries on); query_dirty returns
 * VFMIG_ESTATE while tracking is off; the size pass of save_mutable works in any state, the fill
 * only while paused; both restores refuse a running VF (VFMIG_ESTATE); end() puts the throttle
 * back to 100; the engine's writes (a target receiving pages) set no dirty bits; range 0 starts a
 * few pages into the segment, so segment offsets never equal host offsets.
 */
typedef struct vfmig_simvf vfmig_simvf;

typedef enum vfmig_simvf_state {
    VFMIG_SIMVF_IDLE = 0,    /* no workload started (a target waiting for an image) */
    VFMIG_SIMVF_RUNNING = 1, /* writers are running */
    VFMIG_SIMVF_PAUSED = 2   /* pause() took the VF off the scheduler */
} vfmig_simvf_state;

typedef struct vfmig_simvf_counters {
    uint64_t bytes_written;  /* by the workload */
    uint64_t writes;         /* write operations by the workload */
    uint32_t prepares, ends, pauses, resumes;
    uint32_t immutable_restores, mutable_restores, immutable_refusals;
    uint32_t throttle_percent;
} vfmig_simvf_counters;

/** Defaults as documented in vfmig_simvf_config, size included. Writes the whole struct of this
 *  header, so a caller built against an older vfmig_sim.h fills its struct itself (or rebuilds). */
VFMIG_API void vfmig_simvf_config_init(vfmig_simvf_config *cfg);
/** Allocates VRAM (zeroed) and fills it with the configured content, telling setup_progress how
 *  far it is. *out is the caller's; free with vfmig_simvf_destroy. Returns VFMIG_EINVAL for a bad
 *  size or page size, or a cfg->size that is too small. */
VFMIG_API int vfmig_simvf_create(const vfmig_simvf_config *cfg, vfmig_simvf **out);
/** Stops the workload and frees everything. Accepts NULL. */
VFMIG_API void vfmig_simvf_destroy(vfmig_simvf *sim);
/** The device (ops, layout) of this sim, valid while the sim lives. */
VFMIG_API void vfmig_simvf_device(vfmig_simvf *sim, vfmig_device *out);
/** Starts the workload (the VF runs); idempotent. */
VFMIG_API int vfmig_simvf_start(vfmig_simvf *sim);
/** Changes the workload's rate (bytes/s) at once; starts writers if a started workload was at 0.
 *  Any thread. VFMIG_EINVAL for NULL. */
VFMIG_API int vfmig_simvf_set_dirty_rate(vfmig_simvf *sim, uint64_t bytes_per_s);
/** Stops the workload and waits for the writers to finish their current write (a paused VF
 *  stays paused). Any thread. */
VFMIG_API void vfmig_simvf_stop(vfmig_simvf *sim);
/** Current state. Any thread. */
VFMIG_API vfmig_simvf_state vfmig_simvf_get_state(const vfmig_simvf *sim);
/** Counters. Any thread. */
VFMIG_API void vfmig_simvf_get_counters(const vfmig_simvf *sim, vfmig_simvf_counters *out);
/** Host view of the VRAM: the ranges back to back, `*size` bytes. Valid while the sim lives;
 *  racing with the workload unless paused or stopped. */
VFMIG_API const uint8_t *vfmig_simvf_vram(const vfmig_simvf *sim, uint64_t *size);
/** The last mutable blob given to restore_mutable (NULL if none), for checking a migration. */
VFMIG_API const uint8_t *vfmig_simvf_restored_mutable(const vfmig_simvf *sim, uint64_t *size);

/** A CUDA VF for the CLI and benchmarks: allocates `cfg->size` bytes of VRAM, fills it with
 *  `content` (vfmig_content), and runs a workload kernel writing `dirty_rate` bytes/s into a hot
 *  set of `hot_bytes` (0 = all) that obeys pause/resume (the callbacks in cfg are ignored). */
typedef struct vfmig_cuda_sim vfmig_cuda_sim;
VFMIG_API int vfmig_cuda_sim_create(const vfmig_cuda_config *cfg, int content, uint64_t dirty_rate,
                                    uint64_t hot_bytes, uint64_t seed, vfmig_cuda_sim **out, char *err,
                                    size_t errlen);
VFMIG_API void vfmig_cuda_sim_destroy(vfmig_cuda_sim *s);
VFMIG_API vfmig_cuda *vfmig_cuda_sim_device(vfmig_cuda_sim *s);
/** Starts the workload (idempotent). */
VFMIG_API int vfmig_cuda_sim_start(vfmig_cuda_sim *s);
/** Compares the VRAM of two sims byte for byte on the GPU: 1 equal, 0 different, < 0 error. */
VFMIG_API int vfmig_cuda_sim_compare(vfmig_cuda_sim *a, vfmig_cuda_sim *b);

#ifdef __cplusplus
}
#endif
#endif /* VFMIG_SIM_H */
