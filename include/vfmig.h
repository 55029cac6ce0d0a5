/*
 * vfmig.h - live migration of a GPU virtual function's VRAM with a short blackout.
 *
 * The only public header. Conventions, once for the whole API:
 *   - Every function that can fail returns an int: VFMIG_OK (0) or a negative VFMIG_E status.
 *     vfmig_strerror() names it; sessions also keep a last-error message with the details.
 *   - Handles are opaque. Every create/open call has a matching destroy/close that accepts NULL.
 *   - The library keeps no global mutable state, never prints, never exits or aborts.
 *   - A session (and a link) is driven from one thread at a time, except where a function says
 *     "any thread". Different sessions run concurrently without locking.
 *   - Sizes are bytes, times are nanoseconds (suffix _ns) or milliseconds (suffix _ms).
 */
#ifndef VFMIG_H
#define VFMIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(VFMIG_STATIC_DEFINE)
#define VFMIG_API __attribute__((visibility("default")))
#else
#define VFMIG_API
#endif

#define VFMIG_VERSION_MAJOR 0
#define VFMIG_VERSION_MINOR 1
#define VFMIG_VERSION_PATCH 0
#define VFMIG_VERSION_NUMBER (VFMIG_VERSION_MAJOR * 10000 + VFMIG_VERSION_MINOR * 100 + VFMIG_VERSION_PATCH)
/** Run-time version, to compare with VFMIG_VERSION_NUMBER of the header compiled against. */
VFMIG_API unsigned vfmig_version_number(void);

/* ------------------------------------------------------------------------------------------- */
/* Status codes. Values are pinned: they travel on the wire in ABORT frames and in scripts.     */
/* ------------------------------------------------------------------------------------------- */
#define VFMIG_STATUS_MAP(XX)                                                                     \
    XX(OK, 0, "success")                                                                         \
    XX(EINVAL, -1, "invalid argument")                                                           \
    XX(ENOMEM, -2, "out of memory")                                                              \
    XX(ESTATE, -3, "call not valid in the current state")                                        \
    XX(EDEVICE, -4, "device operation failed")                                                   \
    XX(EIO, -5, "link I/O error")                                                                \
    XX(ECLOSED, -6, "peer closed the connection")                                                \
    XX(ETIMEDOUT, -7, "timed out waiting for the peer")                                          \
    XX(ECONNREFUSED, -8, "connection refused")                                                   \
    XX(EADDRINUSE, -9, "address already in use")                                                 \
    XX(EADDR, -10, "bad endpoint or address")                                                    \
    XX(EPROTO, -11, "protocol violation: malformed or unexpected frame")                         \
    XX(ECHECKSUM, -12, "frame checksum mismatch")                                                \
    XX(EVERSION, -13, "protocol version mismatch")                                               \
    XX(ELAYOUT, -14, "VF layout mismatch between source and target")                            \
    XX(EINCOMPAT, -15, "target refused the VF's immutable state (incompatible host)")            \
    XX(EDIGEST, -16, "image digest mismatch: target image differs from the source")              \
    XX(ECODEC, -17, "corrupt or oversized compressed data")                                      \
    XX(EABORTED, -18, "migration aborted by the peer")                                           \
    XX(ECANCELED, -19, "migration canceled")                                                     \
    XX(ENOTSUP, -20, "not supported")                                                            \
    XX(EAUTH, -21, "peer authentication failed")                                                 \
    XX(ENODEV, -22, "no such device (hardware absent)")                                          \
    XX(EINDOUBT, -23, "outcome unknown: the target was told to resume the VF but did not confirm") \
    XX(EBUSY, -24, "target busy: it runs as many migrations as it allows")

typedef enum vfmig_status {
#define VFMIG_STATUS_ENUM_(name, value, msg) VFMIG_##name = (value),
    VFMIG_STATUS_MAP(VFMIG_STATUS_ENUM_)
#undef VFMIG_STATUS_ENUM_
} vfmig_status;

/** Message for a status ("success", "peer closed the connection", ...). Never NULL; static. */
VFMIG_API const char *vfmig_strerror(int status);
/** Symbolic name of a status ("VFMIG_ECLOSED"). Never NULL; static. */
VFMIG_API const char *vfmig_status_name(int status);

/* ------------------------------------------------------------------------------------------- */
/* The device contract: what the embedder supplies (mirrors the WDDM 3.2 live-migration DDIs).  */
/* ------------------------------------------------------------------------------------------- */
typedef enum vfmig_role { VFMIG_ROLE_SOURCE = 0, VFMIG_ROLE_TARGET = 1 } vfmig_role;

/** One range of the memory basis: a disjoint span of the VF's VRAM, in segment offsets. */
typedef struct vfmig_range {
    uint64_t offset;
    uint64_t size; /* a multiple of the tracking page size */
} vfmig_range;

#define VFMIG_MAX_RANGES 64
#define VFMIG_MIN_PAGE_SIZE 4096u
#define VFMIG_MAX_PAGE_SIZE (2u << 20)

/*
 * Device operations. `dev` is the embedder's pointer from vfmig_device.dev. Each op returns
 * VFMIG_OK or a negative status (VFMIG_EDEVICE when nothing more specific fits). The engine calls
 * ops from its own threads: read/write may be called concurrently from several worker threads
 * (on disjoint pages); every other op is called from the thread running the session.
 * All ops are required except `throttle`, which may be NULL.
 */
typedef struct vfmig_device_ops {
    /* DxgkDdiPrepareLiveMigration / DxgkDdiEndLiveMigration. */
    int (*prepare)(void *dev, vfmig_role role);
    int (*end)(void *dev);
    /* DxgkDdiStartDirtyTracking / DxgkDdiStopDirtyTracking (source only). */
    int (*start_tracking)(void *dev);
    int (*stop_tracking)(void *dev);
    /*
     * DxgkDdiQueryDirtyBitData for `npages` tracking pages of range `range`, starting at page
     * `first_page` of that range. Bit i (LSB-first within 64-bit little-endian words) of
     * `bitmap` is page first_page + i; the engine provides ceil(npages / 64) zeroed words.
     * With `clear` != 0 the read and the reset are atomic: a write racing with the query is
     * either reported now or left set for the next query, never lost.
     */
    int (*query_dirty)(void *dev, uint32_t range, uint64_t first_page, uint64_t npages,
                       uint64_t *bitmap, int clear);
    /* Move bytes between VRAM (segment offset, within one range) and host memory. */
    int (*read)(void *dev, uint64_t offset, void *dst, size_t len);
    int (*write)(void *dev, uint64_t offset, const void *src, size_t len);
    /* Take the VF off / put it back on the scheduler: the edges of the blackout. */
    int (*pause)(void *dev);
    int (*resume)(void *dev);
    /*
     * Two-pass save: with buf == NULL set *size to the bytes needed; then called again with a
     * buffer of *size bytes (the engine owns it). save_mutable is only called while paused.
     * restore_immutable may refuse with VFMIG_EINCOMPAT (wrong driver/firmware version).
     */
    int (*save_immutable)(void *dev, void *buf, uint64_t *size);
    int (*save_mutable)(void *dev, void *buf, uint64_t *size);
    int (*restore_immutable)(void *dev, const void *buf, uint64_t size);
    int (*restore_mutable)(void *dev, const void *buf, uint64_t size);
    /* Optional: slow the VF to `percent` (100 = full speed) when pre-copy does not converge. */
    int (*throttle)(void *dev, unsigned percent);
} vfmig_device_ops;

/**
 * A device as the engine sees it. The engine copies this struct and the ranges at session
 * creation; `ops` and `dev` must stay valid until the session is destroyed.
 */
typedef struct vfmig_device {
    const vfmig_device_ops *ops;
    void *dev;
    uint64_t page_size;         /* bytes per dirty bit: power of two, 4 KiB .. 2 MiB */
    uint32_t nranges;           /* 1 .. VFMIG_MAX_RANGES */
    const vfmig_range *ranges;  /* disjoint; pages are numbered across ranges in this order */
} vfmig_device;

/* ------------------------------------------------------------------------------------------- */
/* Built-in simulated VF: VRAM in host memory, a live workload of writer threads, dirty bits    */
/* set as the hardware would, real pause/resume, versioned state blobs.                          */
/* ------------------------------------------------------------------------------------------- */
typedef enum vfmig_pattern {
    VFMIG_PATTERN_UNIFORM = 0, /* any page, uniformly */
    VFMIG_PATTERN_HOT = 1,     /* a hot set of hot_bytes at the start of VRAM */
    VFMIG_PATTERN_SEQ = 2      /* a sequential sweep over all pages, wrapping */
} vfmig_pattern;

typedef enum vfmig_content {
    VFMIG_CONTENT_ZERO = 0,
    VFMIG_CONTENT_TEXTURE = 1, /* smooth image-like 8-bit RGBA tiles with noise */
    VFMIG_CONTENT_TENSOR = 2,  /* float32 values of a few magnitudes */
    VFMIG_CONTENT_RANDOM = 3,  /* incompressible */
    VFMIG_CONTENT_MIX = 4      /* regions of each of the above (zero 40%, texture 25%, tensor 25%, random 10%) */
} vfmig_content;

typedef struct vfmig_simvf_config {
    uint64_t vram_bytes;       /* total VRAM, split into nranges equal ranges; default 1 GiB */
    uint64_t page_size;        /* tracking page; default 64 KiB */
    uint32_t nranges;          /* default 1; ranges are placed with gaps between them */
    uint64_t dirty_rate;       /* bytes per second the workload writes; 0 = idle */
    vfmig_pattern pattern;     /* default VFMIG_PATTERN_UNIFORM */
    uint64_t hot_bytes;        /* hot set for VFMIG_PATTERN_HOT; default 64 MiB, 0 or > VRAM = all */
    vfmig_content content;     /* default VFMIG_CONTENT_MIX */
    uint32_t writers;          /* workload threads; default 1 */
    uint32_t write_bytes;      /* bytes per write operation; default 4096 (capped at page size) */
    uint64_t immutable_bytes;  /* immutable state blob size; default 4 KiB (at least 64) */
    uint64_t mutable_bytes;    /* mutable state blob size; default 64 KiB (at least 64) */
    uint32_t state_version;    /* stamped in the immutable blob; restore refuses a mismatch */
    uint64_t seed;             /* content and workload seed; same seed = same initial image */
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

/** Defaults as documented in vfmig_simvf_config. */
VFMIG_API void vfmig_simvf_config_init(vfmig_simvf_config *cfg);
/** Allocates VRAM (zeroed) and fills it with the configured content. *out is the caller's; free
 *  with vfmig_simvf_destroy. Returns VFMIG_EINVAL for a bad size or page size. */
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

/* ------------------------------------------------------------------------------------------- */
/* Links: endpoints as strings a person can type.                                               */
/*   tcp://HOST:PORT?streams=N   (HOST: IPv4, [IPv6] or a name; streams 1..64; without it, a    */
/*                               connect opens one per CPU up to 8, a listener accepts up to 64)  */
/*   rdma://HOST:PORT?qps=N      (needs an RDMA device; VFMIG_ENODEV otherwise)                 */
/*   HOST:PORT                   (same as tcp://)                                               */
/* On failure the `err` buffer (if not NULL) receives a message naming what is wrong.           */
/* ------------------------------------------------------------------------------------------- */
typedef struct vfmig_link vfmig_link;
typedef struct vfmig_listener vfmig_listener;

/** Checks an endpoint string without opening anything: VFMIG_OK, or VFMIG_EADDR with a message
 *  in `err` naming what is wrong (for validating options before any work starts). */
VFMIG_API int vfmig_endpoint_validate(const char *endpoint, char *err, size_t errlen);
/** Binds and listens. Port 0 picks a free port (see vfmig_listener_port). */
VFMIG_API int vfmig_listen(const char *endpoint, vfmig_listener **out, char *err, size_t errlen);
/** The bound port (useful with port 0). */
VFMIG_API int vfmig_listener_port(const vfmig_listener *l);
/** Waits up to timeout_ms (<0: forever) for a peer and all of its streams. */
VFMIG_API int vfmig_accept(vfmig_listener *l, int timeout_ms, vfmig_link **out, char *err,
                           size_t errlen);
/** Accepts NULL. Links already accepted stay valid. */
VFMIG_API void vfmig_listener_close(vfmig_listener *l);
/** Connects the control connection and all data streams within timeout_ms (<0: forever). */
VFMIG_API int vfmig_connect(const char *endpoint, int timeout_ms, vfmig_link **out, char *err,
                            size_t errlen);
/** Number of data streams of a connected link. */
VFMIG_API int vfmig_link_streams(const vfmig_link *link);
/** Closes every connection and frees the link. Accepts NULL. Not while a session uses it. */
VFMIG_API void vfmig_link_close(vfmig_link *link);

/* ------------------------------------------------------------------------------------------- */
/* Sessions.                                                                                    */
/* ------------------------------------------------------------------------------------------- */
typedef struct vfmig_session vfmig_session;

typedef enum vfmig_codec {
    VFMIG_CODEC_AUTO = 0, /* chosen per batch by content and bottleneck (a session setting only) */
    VFMIG_CODEC_RAW = 1,
    VFMIG_CODEC_ZERO = 2, /* all pages of the run are zero: no payload */
    VFMIG_CODEC_LZ4 = 3,
    VFMIG_CODEC_ZSTD = 4,
    VFMIG_CODEC_DELTA = 5, /* XOR against the copy last sent, then run-length coded */
    VFMIG_CODEC_COUNT = 6
} vfmig_codec;

/** Short name of a codec ("raw", "lz4", ...). Never NULL. */
VFMIG_API const char *vfmig_codec_name(int codec);

/* Parameters. Values are pinned; vfmig_param_bounds gives the range and default of each. */
typedef enum vfmig_param {
    VFMIG_P_BUDGET_MS = 1,         /* blackout budget the switch-over aims at; default 50 */
    VFMIG_P_MAX_ROUNDS = 2,        /* pre-copy rounds before a forced switch-over; default 30 */
    VFMIG_P_MAX_PRECOPY_MS = 3,    /* pre-copy time before a forced switch-over; default 60000 */
    VFMIG_P_TIMEOUT_MS = 4,        /* longest wait on the peer at any point; default 10000 */
    VFMIG_P_THREADS = 5,           /* encode workers (source) / decode workers (target); 0 = one per
                                      CPU (default). A target decodes on its stream receivers, plus
                                      a decode pool when it has more threads than streams */
    VFMIG_P_CODEC = 6,             /* vfmig_codec; default VFMIG_CODEC_AUTO */
    VFMIG_P_CODEC_LEVEL = 7,       /* level for lz4 (acceleration) / zstd; default 0 = codec's own */
    VFMIG_P_MAX_BANDWIDTH = 8,     /* bytes/s on the wire, all streams together; 0 = unlimited */
    VFMIG_P_DELTA_CACHE_BYTES = 9, /* copies kept for delta encoding; default 64 MiB */
    VFMIG_P_BATCH_BYTES = 10,      /* largest page run per frame; default 256 KiB */
    VFMIG_P_THROTTLE = 11,         /* 1: ask the device to throttle when not converging; default 1 */
    VFMIG_P_VERIFY_READBACK = 12,  /* 1: the target hashes each page as read back from VRAM after
                                      writing it, so the digest checks what VRAM holds (default);
                                      0: it hashes what it wrote (saves one read per page) */
    VFMIG_P_NUMA_NODE = 13,        /* NUMA node of the device (-1 unknown, default): with pinning
                                      "auto", workers run on that node's CPUs */
    VFMIG_P_ENCRYPT = 14           /* 1: encrypt and authenticate every frame after the handshake
                                      (AES-256-GCM, keys from the pre-shared-key handshake; needs
                                      vfmig_session_set_psk). A source asks for it; a target with
                                      it set refuses a source that does not. Default 0 */
} vfmig_param;

/** Range and default of a parameter. VFMIG_EINVAL for an unknown parameter. */
VFMIG_API int vfmig_param_bounds(vfmig_param p, int64_t *min, int64_t *max, int64_t *def);

typedef enum vfmig_phase {
    VFMIG_PHASE_IDLE = 0,
    VFMIG_PHASE_HANDSHAKE = 1,
    VFMIG_PHASE_PRECOPY = 2,
    VFMIG_PHASE_BLACKOUT = 3,
    VFMIG_PHASE_DONE = 4,   /* migrated: the VF runs on the target */
    VFMIG_PHASE_FAILED = 5  /* rolled back: the VF runs on the source; the target did not resume */
} vfmig_phase;

/** Where the VF runs when a session ends. */
typedef enum vfmig_vf_state {
    VFMIG_VF_RUNNING_ON_SOURCE = 0,
    VFMIG_VF_RESUMED_ON_TARGET = 1,
    VFMIG_VF_NOT_RESUMED = 2,      /* target side: the image was not taken over */
    VFMIG_VF_IN_DOUBT = 3          /* source side, VFMIG_EINDOUBT: the target verified the image and
                                      was told to resume, the link broke before it confirmed; the
                                      VF is left paused here for the embedder to decide */
} vfmig_vf_state;

/** "running-on-source", "resumed-on-target", "not-resumed", "in-doubt". */
VFMIG_API const char *vfmig_vf_state_name(vfmig_vf_state s);
VFMIG_API const char *vfmig_phase_name(vfmig_phase p);

typedef enum vfmig_switch_reason {
    VFMIG_SWITCH_NONE = 0,
    VFMIG_SWITCH_CONVERGED = 1,  /* predicted blackout fits the budget */
    VFMIG_SWITCH_MAX_ROUNDS = 2,
    VFMIG_SWITCH_MAX_TIME = 3,
    VFMIG_SWITCH_NO_PROGRESS = 4 /* dirty set stopped shrinking and throttling cannot help */
} vfmig_switch_reason;

VFMIG_API const char *vfmig_switch_reason_name(vfmig_switch_reason r);

/** One pre-copy round (round 0 = full pass) or the final blackout pass (last entry). */
typedef struct vfmig_round_stats {
    uint32_t round;
    uint32_t in_blackout;      /* 1 for the final pass sent while paused */
    uint64_t dirty_pages;      /* pages this round had to send (round 0: all pages) */
    uint64_t zero_pages;       /* of which sent as the zero flag */
    uint64_t bytes_raw;        /* page bytes of non-zero pages */
    uint64_t bytes_wire;       /* frame bytes put on the link, headers included */
    uint64_t duration_ns;
    uint64_t encode_ns;        /* worker time in codecs (summed over workers) */
    double dirty_rate;         /* bytes/s of dirtying measured for this round */
    double throughput;         /* raw page bytes/s moved this round */
    double predicted_blackout_ms; /* what the policy expected a switch-over now to cost */
    uint32_t throttle_percent; /* device throttle in force during the round */
    uint64_t codec_in[VFMIG_CODEC_COUNT];  /* raw page bytes per codec */
    uint64_t codec_out[VFMIG_CODEC_COUNT]; /* encoded bytes per codec */
} vfmig_round_stats;

typedef struct vfmig_stats {
    vfmig_role role;
    vfmig_phase phase;
    int status;                /* VFMIG_OK or the failure */
    vfmig_vf_state vf_state;
    int verified;              /* 1 only if the target's image was checked equal to the source's */
    uint32_t rounds;           /* pre-copy rounds, round 0 included */
    uint32_t streams;
    uint32_t threads;
    vfmig_switch_reason switch_reason;
    uint64_t page_size, pages, bytes_vram;
    uint64_t bytes_raw, bytes_wire, pages_sent, zero_pages;
    uint64_t total_ns;         /* session start to end */
    uint64_t precopy_ns;
    /* Blackout: from pause() on the source to the target reporting the VF resumable. */
    uint64_t blackout_ns;
    uint64_t blackout_final_pages_ns; /* final query + send of the last dirty pages */
    uint64_t blackout_mutable_ns;     /* save_mutable + send */
    uint64_t blackout_verify_ns;      /* target: wait for all pages + digest check */
    uint64_t blackout_restore_ns;     /* target: restore_mutable */
    uint64_t final_dirty_pages;
    double predicted_blackout_ms;
    uint64_t immutable_bytes, mutable_bytes;
    uint64_t codec_in[VFMIG_CODEC_COUNT];
    uint64_t codec_out[VFMIG_CODEC_COUNT];
    double ratio;              /* codec-in bytes / codec-out bytes over the session */
} vfmig_stats;

typedef enum vfmig_event_type {
    VFMIG_EV_PHASE = 1,    /* `phase` changed */
    VFMIG_EV_ROUND = 2,    /* a round ended; `round` points at its statistics */
    VFMIG_EV_LOG = 3,      /* a message for people (`level`: 0 error, 1 warning, 2 info, 3 debug) */
    VFMIG_EV_PROGRESS = 4  /* `done` of `total` bytes of the current round handled */
} vfmig_event_type;

typedef struct vfmig_event {
    vfmig_event_type type;
    vfmig_phase phase;
    const vfmig_round_stats *round; /* VFMIG_EV_ROUND only; valid during the callback */
    const char *message;            /* VFMIG_EV_LOG only; valid during the callback */
    int level;
    uint64_t done, total;
} vfmig_event;

/** Called on the thread that runs the session; must not call back into the same session
 *  except vfmig_session_cancel. */
typedef void (*vfmig_event_cb)(const vfmig_event *ev, void *user);

/**
 * Creates a session for one VF in one role. The device struct and its ranges are copied; ops
 * and dev must outlive the session. Validates the layout (VFMIG_EINVAL with a message in `err`).
 */
VFMIG_API int vfmig_session_create(vfmig_role role, const vfmig_device *device,
                                   vfmig_session **out, char *err, size_t errlen);
/** Accepts NULL. Not while vfmig_session_run is in progress. */
VFMIG_API void vfmig_session_destroy(vfmig_session *s);
/** Sets a parameter before run. VFMIG_EINVAL if out of bounds, VFMIG_ESTATE after run started. */
VFMIG_API int vfmig_session_set_param(vfmig_session *s, vfmig_param p, int64_t value);
VFMIG_API int vfmig_session_get_param(const vfmig_session *s, vfmig_param p, int64_t *value);
/** Worker pinning: "auto" (near the device/NIC NUMA node when known; default), "none", or a
 *  CPU list like "0-3,8". The string is copied. */
VFMIG_API int vfmig_session_set_pinning(vfmig_session *s, const char *spec);
/** Event callback; `user` is passed back untouched. */
VFMIG_API void vfmig_session_set_callback(vfmig_session *s, vfmig_event_cb cb, void *user);
/**
 * Pre-shared key (32..256 bytes: random, e.g. from `vfmig keygen`) for mutual authentication in
 * the handshake (HMAC-SHA256 challenge-response with fresh nonces on both sides, session keys by
 * HKDF over both nonces and the transcript). A source with a key refuses a target that cannot
 * prove it holds the same key before anything of the VF is sent; a target with a key refuses a
 * source without it before anything is written or told. With a key every frame after the
 * handshake is keyed: AES-256-GCM with VFMIG_P_ENCRYPT, else a Poly1305 tag (the COMMIT digest
 * included). len 0 removes the key. The key is copied (and wiped when the session is destroyed).
 * VFMIG_EINVAL for a key under 32 bytes.
 */
VFMIG_API int vfmig_session_set_psk(vfmig_session *s, const void *key, size_t len);
/** Target: a second key it also accepts, during a key rotation (the source's HELLO names which
 *  one it holds). Same rules as vfmig_session_set_psk. */
VFMIG_API int vfmig_session_set_psk2(vfmig_session *s, const void *key, size_t len);

/**
 * Runs the whole migration on a connected link (the session does not take ownership of the
 * link; close it after run). Blocks until done, failed or canceled.
 * Source: prepare, immutable state, rounds, blackout, commit. Target: the mirror of it.
 * On any failure the source VF is resumed and keeps running, and the target is not resumed.
 * Can run once per session.
 */
VFMIG_API int vfmig_session_run(vfmig_session *s, vfmig_link *link);
/** Cancels a running session at any phase, with the same rollback as a failure: blocked sends
 *  and receives are interrupted at once (not at the timeout), so run returns promptly. Any
 *  thread, also before run (which then fails at once). */
VFMIG_API void vfmig_session_cancel(vfmig_session *s);
/** Statistics so far (complete after run returns). Any thread. */
VFMIG_API void vfmig_session_get_stats(const vfmig_session *s, vfmig_stats *out);
/** Number of round records and one of them (index 0 .. count-1). */
VFMIG_API uint32_t vfmig_session_round_count(const vfmig_session *s);
VFMIG_API int vfmig_session_get_round(const vfmig_session *s, uint32_t index, vfmig_round_stats *out);
/** Detailed message of the last failure ("" if none). Valid until the session is destroyed. */
VFMIG_API const char *vfmig_session_last_error(const vfmig_session *s);


/* ------------------------------------------------------------------------------------------- */
/* Server: a target that keeps serving (engine/server.c).                                       */
/*                                                                                              */
/* One listener, many migrations. Each incoming link is authenticated first (with a key, the   */
/* pre-shared-key handshake; nothing of any VF is told or written before), then the embedder's  */
/* open_device callback is asked for the device that takes this VF, given the layout the source */
/* announced, and the session runs on its own thread. A failing connection or session never     */
/* touches another one, nor the listener. Unauthenticated connections hold a small fixed amount */
/* of memory each (a 4 KiB handshake buffer and a link with 128 KiB of control buffers) and at  */
/* most handshake_timeout_ms; when max_handshakes are pending the oldest idle one is dropped, so */
/* idle or slow strangers cannot lock real sources out.                                         */
/* ------------------------------------------------------------------------------------------- */
typedef struct vfmig_server vfmig_server;

/** An authenticated incoming migration, as the source announced it. */
typedef struct vfmig_incoming {
    uint64_t id;                           /* 1, 2, ... per server */
    char peer[64];                         /* source address ("127.0.0.1:40312") */
    uint64_t page_size;
    uint32_t nranges;
    uint64_t range_size[VFMIG_MAX_RANGES]; /* sizes; offsets are the target device's own */
    uint64_t immutable_bytes;
    uint32_t streams;
    int authenticated;                     /* the source proved a key */
    int encrypted;                         /* frames are AES-256-GCM (else Poly1305-tagged when keyed) */
} vfmig_incoming;

/* Callbacks, all called on the connection's own thread (several at once for different
 * connections: they must be thread-safe against each other). */
typedef struct vfmig_server_callbacks {
    /** Required: the device for this migration, with the announced layout (*dev and what it
     *  points to stay valid until `finished`). *dev_user is passed back. A status refuses the
     *  migration; the source is told. */
    int (*open_device)(void *user, const vfmig_incoming *in, vfmig_device *dev, void **dev_user);
    /** Optional: set parameters or a callback on the session before it runs. */
    void (*configure)(void *user, const vfmig_incoming *in, vfmig_session *s, void *dev_user);
    /** Required: the session ended with `status` (stats readable from s; the server destroys it
     *  afterwards). Release the device here. */
    void (*finished)(void *user, const vfmig_incoming *in, vfmig_session *s, int status, void *dev_user);
    /** Optional: a connection that ended before a session (wrong key, garbage, timeout, busy). */
    void (*refused)(void *user, const char *peer, int status, const char *why);
    void *user;
} vfmig_server_callbacks;

typedef struct vfmig_server_config {
    const char *endpoint;       /* as vfmig_listen; copied */
    const void *psk;            /* 32..256 bytes, copied; NULL: no authentication (see allow_insecure) */
    size_t psk_len;
    const void *psk2;           /* optional second key accepted during a rotation */
    size_t psk2_len;
    int require_encrypt;        /* refuse sources that do not ask for encryption */
    int allow_insecure;         /* without a key, listen on a non-loopback address anyway */
    unsigned max_sessions;      /* migrations at once; default 4 (more: refused with VFMIG_EBUSY) */
    unsigned max_handshakes;    /* connections being authenticated at once; default 128 (a source
                                   is pushed out only if it stays silent while that many newer
                                   ones arrive) */
    int handshake_timeout_ms;   /* from stream setup to authenticated; default 5000 */
    int timeout_ms;             /* VFMIG_P_TIMEOUT_MS of the sessions; 0 = the default */
} vfmig_server_config;

typedef struct vfmig_server_counters {
    uint64_t links;             /* links accepted (stream setup done) */
    uint64_t refused;           /* connections that ended before a session */
    uint64_t sessions_ok, sessions_failed;
    uint32_t active_sessions, pending_handshakes;
} vfmig_server_counters;

/** Defaults as documented in vfmig_server_config. */
VFMIG_API void vfmig_server_config_init(vfmig_server_config *cfg);
/** 1 if every address the endpoint's host resolves to is loopback, 0 if not, <0 on a bad endpoint. */
VFMIG_API int vfmig_endpoint_is_loopback(const char *endpoint);
/** Listens. VFMIG_EAUTH (with a message) for a non-loopback endpoint without a key unless
 *  allow_insecure; VFMIG_EINVAL for a short key or missing callbacks; listen errors as
 *  vfmig_listen. *out is the caller's; free with vfmig_server_destroy. */
VFMIG_API int vfmig_server_create(const vfmig_server_config *cfg, const vfmig_server_callbacks *cb,
                                  vfmig_server **out, char *err, size_t errlen);
/** The bound port. */
VFMIG_API int vfmig_server_port(const vfmig_server *srv);
/** Serves on the calling thread until vfmig_server_stop; then cancels the sessions in flight
 *  (usual rollback: their sources resume their VFs), waits for every connection thread and
 *  returns VFMIG_OK. Once per server. */
VFMIG_API int vfmig_server_run(vfmig_server *srv);
/** Makes run return. Any thread, and async-signal-safe (one atomic store). */
VFMIG_API void vfmig_server_stop(vfmig_server *srv);
/** Counters so far. Any thread. */
VFMIG_API void vfmig_server_get_counters(vfmig_server *srv, vfmig_server_counters *out);
/** Frees a server that is not running (accepts NULL). */
VFMIG_API void vfmig_server_destroy(vfmig_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* VFMIG_H */
