/*
 * vfmig.h - live migration of a GPU virtual function's VRAM with a short blackout.
 *
 * The core public header (the simulated VF that the CLI, tests and benchmarks use is apart, in
 * vfmig_sim.h). Conventions, once for the whole API:
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
    XX(EBUDGET, -24, "the blackout budget cannot be met: the VF keeps running on the source") \
    XX(EBUSY, -25, "target busy: it runs as many migrations as it allows")                      \
    XX(ETOOBIG, -26, "the VF is larger than the target accepts")                               \
    XX(EMEMLIMIT, -27, "the target's memory budget has no room for this VF now")

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
 * ops from its own threads: read/write (and map) may be called concurrently from several worker
 * threads (on disjoint pages); every other op is called from the thread running the session.
 * All ops are required except `throttle` and `map`, which may be NULL.
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
    /*
     * Optional: in-place access. Returns a host pointer through which the engine may load and
     * store VRAM [offset, offset+len) of one range directly, or NULL where the device cannot
     * offer that (then the engine uses read/write for those bytes). Called between prepare and
     * end; the pointer stays valid until end. With it the engine reads pages for sending
     * without a staging copy (the socket copies straight out of VRAM), receives raw pages
     * straight into VRAM and patches delta pages in place. Loads from a running VF may race
     * with its writes exactly as read() does: dirty tracking covers it.
     */
    void *(*map)(void *dev, uint64_t offset, uint64_t len);
    /*
     * Optional: why the last op failed or refused, for the session's error message ("state
     * version 7, this host runs 1"). Writes at most len bytes, NUL-terminated; called right after
     * the failing op on the thread that called it.
     */
    void (*describe)(void *dev, char *buf, size_t len);
} vfmig_device_ops;

/**
 * A device as the engine sees it. The engine copies this struct, the ops table and the ranges at
 * session creation; `dev` must stay valid until the session is destroyed. Initialise it as
 * `vfmig_device d = {VFMIG_DEVICE_SIZES, .ops = &my_ops, ...}`.
 */
#define VFMIG_DEVICE_SIZES .size = sizeof(vfmig_device), .ops_size = sizeof(vfmig_device_ops)
typedef struct vfmig_device {
    /* sizeof(vfmig_device) and sizeof(vfmig_device_ops) as the embedder compiled them: the
     * library checks both, and treats ops a smaller (older) table lacks as NULL. */
    uint32_t size, ops_size;
    const vfmig_device_ops *ops;
    void *dev;
    uint64_t page_size;         /* bytes per dirty bit: power of two, 4 KiB .. 2 MiB */
    uint32_t nranges;           /* 1 .. VFMIG_MAX_RANGES */
    const vfmig_range *ranges;  /* disjoint; pages are numbered across ranges in this order */
    /* Optional, may be NULL (a bitmap costs nothing to read): for devices that find dirty pages
     * by scanning (see "Dirty sources" below), sets *ns to the wall time the latest scan of all
     * ranges took - what the final query will cost inside the blackout - so the switch-over
     * policy can count it. Called from the session thread with `dev`. */
    int (*tracking_cost)(void *dev, uint64_t *ns);
} vfmig_device;


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
/**
 * A link over connections the embedder already made and trusts to be paired (a daemon's own TCP
 * sockets, vsock, a UNIX socketpair): `control_fd` and `ndata` data connections, each a
 * connected stream socket, in the same order on both ends. Once they pass the checks the link
 * takes the descriptors over (made non-blocking; vfmig_link_close closes them, as does a failure
 * to allocate the link); refused ones stay the caller's.
 * No stream setup runs on them; authentication still happens in the session's handshake.
 * VFMIG_EINVAL with a message for a descriptor that is not a connected stream socket.
 */
VFMIG_API int vfmig_link_from_fds(int control_fd, const int *data_fds, unsigned ndata, vfmig_link **out,
                                  char *err, size_t errlen);
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
/* Deprecated: the fixed per-codec slots (codec_in/codec_out) of vfmig_stats and
 * vfmig_round_stats have room for this many codec ids. They stay filled for binaries that read
 * them; new code asks vfmig_session_get_codec_stats, which has no such limit. */
#define VFMIG_CODEC_SLOTS 16

/** Short name of a codec id ("raw", "lz4", ...; "auto" for VFMIG_CODEC_AUTO, "?" for an
 *  unknown id). Never NULL; static. Any thread. */
VFMIG_API const char *vfmig_codec_name(int codec);
/** Number of codecs this library has (AUTO, a choice rather than a codec, not counted): indexes
 *  0 .. count-1 of vfmig_codec_at and vfmig_session_get_codec_stats. A later library may have
 *  more. Any thread. */
VFMIG_API unsigned vfmig_codec_count(void);
/** The codec id (vfmig_codec) at `index`, in the library's own order (raw, zero, lz4, zstd,
 *  delta today); VFMIG_EINVAL for index >= vfmig_codec_count(). Any thread. */
VFMIG_API int vfmig_codec_at(unsigned index);

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
    VFMIG_P_DELTA_CACHE_BYTES = 9, /* cap on the copies kept for delta encoding; the cache grows
                                      to the pages re-sent after round 0 that changed little since
                                      last sent (stats.delta_cache_bytes); default 1 GiB */
    VFMIG_P_BATCH_BYTES = 10,      /* largest page run per frame; default 1 MiB (fewer system calls
                                      per byte on both ends: target CPU -22% against 256 KiB) */
    VFMIG_P_THROTTLE = 11,         /* 1: ask the device to throttle when not converging; default 1 */
    VFMIG_P_VERIFY = 12,           /* vfmig_verify: what the image digest checks; default
                                      VFMIG_VERIFY_READBACK */
    VFMIG_P_NUMA_NODE = 13,        /* NUMA node of the device (-1 unknown, default): with pinning
                                      "auto", workers run on that node's CPUs */
    VFMIG_P_ENCRYPT = 14,          /* 1: encrypt and authenticate every frame after the handshake
                                      (AES-256-GCM, keys from the pre-shared-key handshake; needs
                                      vfmig_session_set_psk). A source asks for it; a target with
                                      it set refuses a source that does not. Default 0 */
    VFMIG_P_ON_BUDGET_MISS = 15,   /* vfmig_budget_miss: what the source does when neither full
                                      speed nor the allowed throttle can meet the budget by the
                                      round or pre-copy time limit, or when a blackout will
                                      overrun it; default VFMIG_BUDGET_MISS_RETRY */
    VFMIG_P_PROGRESS_MS = 16       /* interval of VFMIG_EV_PROGRESS events; 0 = none; default 200 */
} vfmig_param;
/* Parameters that may also change while the session runs (any thread): the budget (the policy
 * uses it from its next decision), the bandwidth cap (applied to the link at once), throttling
 * allowed, the progress interval. The others are VFMIG_ESTATE once run started. */
/* Old name of VFMIG_P_VERIFY (0 = applied, 1 = readback keep their meaning). */
#define VFMIG_P_VERIFY_READBACK VFMIG_P_VERIFY

/*
 * What the image digest checks before the target may resume. The digest is kept up to date as
 * pages are sent and applied (no pass over the whole VRAM at COMMIT): the sum, lane-wise mod
 * 2^64, of a 128-bit mix of (page index, page hash) over every page, the page hash being
 * XXH3-64 or, for pages last sent as deltas, a linear hash over GF(2^64) that both ends update
 * from the changed bytes alone. It detects an accidental change of a page, or a page lost or
 * misplaced, except with probability about 2^-55 (4 KiB pages; the per-page hash bounds it); it
 * is not a cryptographic commitment against a forger.
 */
typedef enum vfmig_verify {
    VFMIG_VERIFY_APPLIED = 0,  /* target hashes the bytes it handed to the device (cheapest) */
    VFMIG_VERIFY_READBACK = 1, /* target hashes what VRAM holds after each write (default; free
                                  for devices with in-place access, one more read otherwise) */
    VFMIG_VERIFY_FULL = 2      /* as readback, and after the pause both ends re-read their whole
                                  VRAM and compare digests of it before the target may resume:
                                  the byte-for-byte guarantee (costs a pass over VRAM inside the
                                  blackout, reported as blackout_full_verify_ns) */
} vfmig_verify;

/*
 * The budget is a contract: a migration that ends VFMIG_OK blacked out for no more than the
 * budget (give or take the 10% the watch leaves for what follows it), unless told to switch
 * anyway. Two things can miss it:
 *   - pre-copy: neither full speed nor the allowed throttle gets the predicted blackout under
 *     the budget by the round or time limit (or the fixed costs alone exceed it);
 *   - the blackout itself: after the pause the source re-predicts from the exact final set and
 *     watches the clock; before COMMIT, a blackout that will clearly overrun is called off: the
 *     workers finish the frames they hold, the VF resumes on the source, the target discards the
 *     state it got, and the pages not sent go to the next round. After the verdict, one that did
 *     overrun gets ABORT instead of GO.
 */
typedef enum vfmig_budget_miss {
    VFMIG_BUDGET_MISS_ABORT = 0,  /* keep the VF on the source and fail with VFMIG_EBUDGET */
    VFMIG_BUDGET_MISS_SWITCH = 1, /* switch over anyway, best effort (reason budget-miss-switch);
                                     the blackout is never called off */
    VFMIG_BUDGET_MISS_RETRY = 2   /* default: a switch-over called off in the blackout returns to
                                     pre-copy once, with the model corrected by what the blackout
                                     measured; a second miss is VFMIG_EBUDGET. Misses in
                                     pre-copy abort */
} vfmig_budget_miss;

/** Name of a parameter as the command line spells it ("budget-ms", "max-bandwidth"), "?" for an
 *  unknown one. Never NULL; static. */
VFMIG_API const char *vfmig_param_name(vfmig_param p);
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
    VFMIG_SWITCH_NO_PROGRESS = 4, /* dirty set stopped shrinking, more rounds cannot help, and the
                                     predicted blackout fits the budget */
    VFMIG_SWITCH_BUDGET_MISS = 5, /* over budget, switched anyway (VFMIG_BUDGET_MISS_SWITCH) */
    VFMIG_SWITCH_REQUESTED = 6    /* vfmig_session_switchover_now */
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
    uint64_t cpu_ns;           /* CPU time of this end's page workers in the round */
    uint64_t peer_cpu_ns;      /* source: the target's apply CPU time, from its acknowledgement */
    double dirty_rate;         /* bytes/s of dirtying measured for this round */
    double throughput;         /* raw page bytes/s moved this round */
    double predicted_blackout_ms; /* what the policy expected a switch-over now to cost */
    uint32_t throttle_percent; /* device throttle in force during the round */
    /* Deprecated (see VFMIG_CODEC_SLOTS): vfmig_session_get_round_codec_stats. */
    uint64_t codec_in[VFMIG_CODEC_SLOTS];  /* raw page bytes per codec id */
    uint64_t codec_out[VFMIG_CODEC_SLOTS]; /* encoded bytes per codec id */
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
    /* Blackout: from pause() on the source until the target confirmed it resumed the VF (source);
     * from the first blackout frame until resume (target). */
    uint64_t blackout_ns;
    uint64_t blackout_final_pages_ns; /* final query + send of the last dirty pages */
    uint64_t blackout_mutable_ns;     /* save_mutable + send */
    uint64_t blackout_verify_ns;      /* target: wait for all pages + digest check */
    uint64_t blackout_restore_ns;     /* target: restore_mutable */
    /* The same blackout in stages that do not overlap and add up to blackout_ns: */
    uint64_t blackout_pause_ns;       /* source: pause() */
    uint64_t blackout_query_ns;       /* source: final dirty-bitmap query */
    uint64_t blackout_send_ns;        /* source: final pages and mutable state sent (in parallel) */
    uint64_t blackout_target_ns;      /* target: last pages applied, digest checked, state restored */
    uint64_t blackout_roundtrip_ns;   /* the rest: COMMIT/VERDICT and GO/GO_ACK on the network */
    uint64_t blackout_full_verify_ns; /* VFMIG_VERIFY_FULL: re-reading VRAM (in send / target) */
    uint64_t final_dirty_pages;
    double predicted_blackout_ms;     /* what the policy expected when it switched over */
    double predicted_pages_ms;        /* of which the final pass */
    double predicted_fixed_ms;        /* of which query, mutable state, round trips */
    uint32_t throttle_min_percent;    /* lowest throttle asked of the VF (100 = never throttled) */
    uint32_t verify;                  /* vfmig_verify in force */
    double wire_rate;                 /* bytes/s on the link over pre-copy (source) */
    uint64_t delta_cache_bytes;       /* delta cache actually used (grows to the re-dirtied pages
                                         that changed little, up to VFMIG_P_DELTA_CACHE_BYTES) */
    uint64_t immutable_bytes, mutable_bytes;
    /* Deprecated (see VFMIG_CODEC_SLOTS): vfmig_session_get_codec_stats. */
    uint64_t codec_in[VFMIG_CODEC_SLOTS];  /* per codec id, as in the round statistics */
    uint64_t codec_out[VFMIG_CODEC_SLOTS];
    double ratio;              /* codec-in bytes / codec-out bytes over the session */
    /* Appended in version 2 of the struct (vfmig_session_get_stats_sized): the budget contract. */
    int32_t budget_met;               /* source: 1 blackout within the budget, 0 over it (switched
                                         anyway, or refused), -1 no switch-over happened */
    double budget_margin_ms;          /* source: budget - blackout (negative: over by that much) */
    uint32_t switchovers_called_off;  /* blackouts called off before COMMIT (each resumed the VF
                                         on the source and went back to pre-copy) */
    uint64_t called_off_ns;           /* source: time the VF was paused in those */
} vfmig_stats;

typedef enum vfmig_event_type {
    VFMIG_EV_PHASE = 1,    /* `phase` changed */
    VFMIG_EV_ROUND = 2,    /* a round ended; `round` points at its statistics */
    VFMIG_EV_LOG = 3,      /* a message for people, `level` a vfmig_log_level */
    VFMIG_EV_PROGRESS = 4  /* every VFMIG_P_PROGRESS_MS: `progress`, and `done` of `total` bytes
                              of the current round handled */
} vfmig_event_type;

/** Where a running migration stands (vfmig_session_get_progress, VFMIG_EV_PROGRESS). */
typedef struct vfmig_progress {
    uint32_t size;              /* the caller sets sizeof(vfmig_progress); later versions append */
    vfmig_phase phase;
    uint32_t round;             /* current round (0 = full pass) */
    uint32_t throttle_percent;  /* asked of the VF now (100 = full speed) */
    uint64_t elapsed_ns;        /* since the session started */
    uint64_t bytes_sent;        /* on the wire so far, all streams (source; target: received) */
    uint64_t bytes_done;        /* page bytes handled so far, zero pages included */
    uint64_t round_done, round_total; /* page bytes of the current round handled / to handle */
    uint64_t bytes_remaining;   /* the rest of the current round, plus what the last query found
                                   dirty beyond it (source) */
    double wire_rate;           /* bytes/s on the wire over the last interval */
    double dirty_rate;          /* bytes/s of dirtying, as last measured (source) */
    double expected_blackout_ms; /* the policy's prediction after the last round (source) */
    double eta_ms;              /* to the end of the current round at the current rate, plus the
                                   expected blackout; -1 when not known yet */
} vfmig_progress;

typedef enum vfmig_log_level {
    VFMIG_LOG_ERROR = 0,
    VFMIG_LOG_WARNING = 1,
    VFMIG_LOG_INFO = 2,
    VFMIG_LOG_DEBUG = 3
} vfmig_log_level;

typedef struct vfmig_event {
    vfmig_event_type type;
    vfmig_phase phase;
    const vfmig_round_stats *round; /* VFMIG_EV_ROUND only; valid during the callback */
    const char *message;            /* VFMIG_EV_LOG only; valid during the callback */
    int level;
    uint64_t done, total;
    const vfmig_progress *progress; /* VFMIG_EV_PROGRESS only; valid during the callback */
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
/** Progress of a run so far; out->size must be set to sizeof(*out) (VFMIG_EINVAL otherwise).
 *  Any thread, also before and after run. */
VFMIG_API int vfmig_session_get_progress(const vfmig_session *s, vfmig_progress *out);
/** Source: end pre-copy after the round in flight and switch over now (reason "requested"),
 *  whatever the budget says. VFMIG_ESTATE on a target or outside pre-copy. Any thread. */
VFMIG_API int vfmig_session_switchover_now(vfmig_session *s);
/** Statistics so far (complete after run returns). Any thread. */
VFMIG_API void vfmig_session_get_stats(const vfmig_session *s, vfmig_stats *out);
/** The same into a struct of `size` bytes as the caller compiled it (sizeof(vfmig_stats)):
 *  fields are only ever appended, so a caller built against an older header gets the fields it
 *  knows. VFMIG_EINVAL for NULL or a size of 0. */
VFMIG_API int vfmig_session_get_stats_sized(const vfmig_session *s, vfmig_stats *out, size_t size);
/** Number of round records and one of them (index 0 .. count-1). */
VFMIG_API uint32_t vfmig_session_round_count(const vfmig_session *s);
VFMIG_API int vfmig_session_get_round(const vfmig_session *s, uint32_t index, vfmig_round_stats *out);
/** vfmig_session_get_round into a struct of `size` bytes, as vfmig_session_get_stats_sized. */
VFMIG_API int vfmig_session_get_round_sized(const vfmig_session *s, uint32_t index, vfmig_round_stats *out,
                                            size_t size);
/** What one codec carried, over the session or one round. Fields are only ever appended. */
typedef struct vfmig_codec_stats {
    int codec;                 /* vfmig_codec id */
    const char *name;          /* vfmig_codec_name(codec): static */
    uint64_t bytes_in;         /* raw page bytes the codec was given (source: encoded; target:
                                  decoded) */
    uint64_t bytes_out;        /* bytes it produced on the wire, frame headers not included */
} vfmig_codec_stats;

/** The figures of the codec at `codec_index` (0 .. vfmig_codec_count()-1) over the session so
 *  far (complete after run returns), into a struct of `out_size` bytes as the caller compiled it
 *  (sizeof(vfmig_codec_stats)): a smaller (older) struct gets the fields it knows, a larger one
 *  zeros beyond ours. VFMIG_EINVAL for NULL, a size of 0 or an index out of range. Any thread. */
VFMIG_API int vfmig_session_get_codec_stats(const vfmig_session *s, unsigned codec_index, vfmig_codec_stats *out,
                                            size_t out_size);
/** The same for round record `round_index` (as vfmig_session_get_round). VFMIG_EINVAL also for
 *  a round index out of range. Any thread. */
VFMIG_API int vfmig_session_get_round_codec_stats(const vfmig_session *s, uint32_t round_index, unsigned codec_index,
                                                  vfmig_codec_stats *out, size_t out_size);
/** Detailed message of the last failure ("" if none). Valid until the session is destroyed. */
VFMIG_API const char *vfmig_session_last_error(const vfmig_session *s);

/* ------------------------------------------------------------------------------------------- */
/* Dirty sources beyond the simulated bitmap (issue 10): a hash tracker for devices without     */
/* dirty bits, host memory tracked by the kernel, and a CUDA VF whose dirty pages a GPU kernel   */
/* finds by hashing.                                                                             */
/* ------------------------------------------------------------------------------------------- */
/** Where a device's dirty bits come from (the CLI's JSON key "dirty_source"). */
typedef enum vfmig_dirty_source {
    VFMIG_DIRTY_BITMAP = 0,     /* the device's own dirty bits (the simulated VF, WDDM bitplane) */
    VFMIG_DIRTY_HASH = 1,       /* vfmig_hashtrack: pages hashed against what was read last */
    VFMIG_DIRTY_UFFD_WP = 2,    /* vfmig_hostmem: userfaultfd async write-protect + PAGEMAP_SCAN */
    VFMIG_DIRTY_SOFT_DIRTY = 3, /* vfmig_hostmem: /proc/self/clear_refs + pagemap soft-dirty bits */
    VFMIG_DIRTY_CUDA_HASH = 4   /* vfmig_cuda: a GPU kernel hashes VRAM, only the bitmap crosses */
} vfmig_dirty_source;

/** "bitmap", "hash", "uffd-wp", "soft-dirty", "cuda-hash". Never NULL; static. */
VFMIG_API const char *vfmig_dirty_source_name(vfmig_dirty_source s);

/** What finding dirty pages costs. "Scan" = one query_dirty that did the work (a query answered
 *  from the scan just before it costs nothing and is not counted). */
typedef struct vfmig_tracking_stats {
    vfmig_dirty_source source;
    uint64_t scans;           /* scans done since the device was created */
    uint64_t last_ns;         /* wall time of the latest scan (uffd: scan and re-arm) */
    uint64_t last_cpu_ns;     /* CPU time of the latest scan, summed over its threads */
    uint64_t last_bytes;      /* bytes of memory the latest scan covered */
    uint64_t last_dirty;      /* pages it reported */
    uint64_t total_ns, total_cpu_ns, total_bytes;
    uint64_t pages_hashed;    /* hash: pages hashed in full (their samples matched) */
    uint64_t pages_sampled;   /* hash: pages found dirty by the sampling pre-filter alone */
    uint64_t pages_read_hashed; /* hash: pages hashed as the engine read them (what was sent) */
    double cpu_ns_per_gib;    /* latest scan's CPU ns per GiB covered */
} vfmig_tracking_stats;

/* Callbacks into the embedder's VF scheduler, for devices whose memory the library tracks but
 * whose work it cannot stop itself (another program's threads or kernels). `user` is passed
 * back. pause() must return only once no more writes reach the memory; resume() undoes it.
 * save_mutable / restore_mutable follow the device contract (two-pass save); NULL means the VF
 * has no mutable state beyond its memory (the library then sends a small header blob). throttle
 * may be NULL. All are called from the session thread. */
typedef struct vfmig_vf_callbacks {
    int (*pause)(void *user);
    int (*resume)(void *user);
    int (*save_mutable)(void *user, void *buf, uint64_t *size);
    int (*restore_mutable)(void *user, const void *buf, uint64_t size);
    int (*throttle)(void *user, unsigned percent);
    void *user;
} vfmig_vf_callbacks;

/* --- Hash tracker ---------------------------------------------------------------------------
 * Wraps a device that has no dirty bits (its query_dirty, start_tracking and stop_tracking may
 * be NULL) and gives it exact ones: every page the engine reads through the wrapper is hashed
 * (XXH3-64) as read, so the tracker knows the hash of what was sent; a query hashes the pages
 * again and reports those whose hash differs (or that were never read whole). A sampling
 * pre-filter compares a few cache lines of each page first: a page whose samples differ is dirty
 * without hashing the rest; one whose samples match is hashed in full, so a changed page is never
 * missed (a write that puts back exactly the bytes that were sent is, rightly, not reported). The
 * pre-filter runs where it pays: on ranges the previous scan found largely dirty, read through
 * the device's read op.
 * A query with clear == 0 scans and keeps its answer; the next clear query of the same range, if
 * the VF has not been paused since, returns that answer without a second scan (writes between
 * the two stay different from what was sent and are found by the next scan; every query made
 * while paused scans afresh). Scans run on `threads` threads. */
typedef struct vfmig_hashtrack vfmig_hashtrack;

typedef struct vfmig_hashtrack_config {
    uint32_t threads;        /* scan threads; 0 = one per CPU, up to 8 (default) */
    uint32_t samples;        /* cache lines sampled per page before hashing it; 0 = no pre-filter;
                                default 4 */
    uint32_t sample_threshold_pct; /* through the read op, the pre-filter runs on a range whose
                                previous scan found at least this % of it dirty (below, the samples
                                cost more than the hashes they save); in place (host_view) only
                                when 0: a direct scan there streams at the memory's read speed,
                                which scattered samples do not beat; 0 = always; default 50 */
    /* Optional host view of the device memory: the ranges back to back, like vfmig_simvf_vram.
     * With it, scans hash memory in place; without, they read it through the device's read op in
     * chunks. Must stay valid while the tracker lives. */
    const uint8_t *host_view;
} vfmig_hashtrack_config;

VFMIG_API void vfmig_hashtrack_config_init(vfmig_hashtrack_config *cfg);
/** Wraps `inner` (copied; its ops and dev must outlive the tracker). The page size must be a
 *  multiple of 1 KiB (every valid tracking page is). *out is the caller's; free with
 *  vfmig_hashtrack_destroy. VFMIG_EINVAL for a bad layout, VFMIG_ENOMEM. */
VFMIG_API int vfmig_hashtrack_create(const vfmig_device *inner, const vfmig_hashtrack_config *cfg,
                                     vfmig_hashtrack **out);
/** Accepts NULL. Not while a session uses the tracker's device. */
VFMIG_API void vfmig_hashtrack_destroy(vfmig_hashtrack *t);
/** The wrapped device with dirty bits (its tracking_cost op reports the latest scan), valid while
 *  the tracker lives. */
VFMIG_API void vfmig_hashtrack_device(vfmig_hashtrack *t, vfmig_device *out);
/** Scan costs so far. Any thread. */
VFMIG_API void vfmig_hashtrack_get_stats(const vfmig_hashtrack *t, vfmig_tracking_stats *out);

/* --- Host memory device ---------------------------------------------------------------------
 * A region of the embedding process's memory (private anonymous or shared) as a VF's VRAM, one
 * range at segment offset 0. Dirty pages are tracked by the kernel: userfaultfd write-protect in
 * asynchronous mode with the PAGEMAP_SCAN ioctl (Linux 6.7+: scan and re-protect in one call,
 * exact), or soft-dirty bits (/proc/self/clear_refs + /proc/self/pagemap) where async
 * write-protect is missing. Soft-dirty clearing is process-wide and not atomic with the read, so
 * in that mode each clearing query briefly pauses the VF through the callbacks, and only one
 * soft-dirty tracked region may exist per process (another one's bits would be cleared).
 * Writes by the engine (a target receiving pages) go straight to memory. The region must stay
 * mapped while the device lives; pages discarded while tracking (MADV_DONTNEED, remapping) are
 * not seen as writes, so an embedder must not discard memory during a migration. */
typedef struct vfmig_hostmem vfmig_hostmem;

typedef enum vfmig_hostmem_tracker {
    VFMIG_HOSTMEM_AUTO = 0,      /* uffd-wp if the kernel has it, else soft-dirty */
    VFMIG_HOSTMEM_UFFD_WP = 1,
    VFMIG_HOSTMEM_SOFT_DIRTY = 2
} vfmig_hostmem_tracker;

typedef struct vfmig_hostmem_config {
    void *base;                  /* page-aligned start of the region (the embedder's) */
    uint64_t size;               /* bytes: a multiple of page_size */
    uint64_t page_size;          /* tracking page: power of two, >= the system page; default 4 KiB */
    vfmig_hostmem_tracker tracker;
    vfmig_vf_callbacks cb;       /* pause/resume are required for a source */
    uint32_t state_version;      /* stamped in the immutable blob; restore refuses a mismatch */
} vfmig_hostmem_config;

VFMIG_API void vfmig_hostmem_config_init(vfmig_hostmem_config *cfg);
/** Checks the region and opens the tracker (for a source it is armed at start_tracking). The
 *  region stays the embedder's and must outlive the device. VFMIG_EINVAL for a bad region,
 *  VFMIG_ENOTSUP with a message in `err` naming what the kernel lacks when no tracker works. */
VFMIG_API int vfmig_hostmem_create(const vfmig_hostmem_config *cfg, vfmig_hostmem **out, char *err,
                                   size_t errlen);
/** Unregisters the region (its contents stay) and frees the device. Accepts NULL. */
VFMIG_API void vfmig_hostmem_destroy(vfmig_hostmem *h);
VFMIG_API void vfmig_hostmem_device(vfmig_hostmem *h, vfmig_device *out);
/** VFMIG_DIRTY_UFFD_WP or VFMIG_DIRTY_SOFT_DIRTY: what this device tracks with. */
VFMIG_API vfmig_dirty_source vfmig_hostmem_dirty_source(const vfmig_hostmem *h);
/** Scan (and, for uffd-wp, re-arm) costs so far. Any thread. */
VFMIG_API void vfmig_hostmem_get_stats(const vfmig_hostmem *h, vfmig_tracking_stats *out);

/* --- CUDA device ----------------------------------------------------------------------------
 * VRAM is a device allocation: the embedder's (pointer and size) or one vfmig_cuda_sim_create
 * allocates with a workload kernel writing into it. Dirty pages are found by a hashing kernel
 * (the same XXH3-64 as the host tracker) that compares each page with the hash of what was last
 * read and writes a bitmap; only the bitmap crosses PCIe. Reads and writes go through pinned,
 * double-buffered staging with asynchronous copies on per-worker streams; a read first copies the
 * pages within VRAM and hashes that copy, so the hash is exactly that of the bytes sent. Built
 * only when CMake finds the CUDA toolkit; otherwise (and without a GPU) every constructor fails
 * with VFMIG_ENODEV and a message naming CUDA. */
typedef struct vfmig_cuda vfmig_cuda;

typedef struct vfmig_cuda_config {
    int gpu;                     /* CUDA device ordinal; default 0 */
    void *dptr;                  /* device pointer of the VRAM (the embedder's); NULL with
                                    vfmig_cuda_sim_create */
    uint64_t size;               /* bytes: a multiple of page_size */
    uint64_t page_size;          /* tracking page; default 64 KiB */
    uint64_t staging_bytes;      /* per staging buffer (two per worker slot); default 4 MiB */
    vfmig_vf_callbacks cb;       /* pause/resume stop and restart the embedder's kernels */
    uint32_t state_version;
} vfmig_cuda_config;

VFMIG_API void vfmig_cuda_config_init(vfmig_cuda_config *cfg);
/** 1 if this build has CUDA and a GPU is usable; else 0 with the reason in `err`. */
VFMIG_API int vfmig_cuda_available(char *err, size_t errlen);
/** Device over the embedder's allocation. VFMIG_ENODEV (no CUDA build, no GPU), VFMIG_EINVAL,
 *  VFMIG_ENOMEM; `err` says which. */
VFMIG_API int vfmig_cuda_create(const vfmig_cuda_config *cfg, vfmig_cuda **out, char *err, size_t errlen);
VFMIG_API void vfmig_cuda_destroy(vfmig_cuda *c);
VFMIG_API void vfmig_cuda_device(vfmig_cuda *c, vfmig_device *out);
VFMIG_API void vfmig_cuda_get_stats(const vfmig_cuda *c, vfmig_tracking_stats *out);
/** GB/s of the hash kernel and of a device-to-device copy over the whole VRAM (for bench/gpu). */
VFMIG_API int vfmig_cuda_measure(vfmig_cuda *c, double *hash_gbps, double *copy_gbps);
/** Host-side hash of `len` bytes of VRAM at `offset` computed by the GPU kernel (for tests that
 *  compare it with the host's XXH3). */
VFMIG_API int vfmig_cuda_hash_pages(vfmig_cuda *c, uint64_t offset, uint64_t npages, uint64_t *hashes);


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
/* idle or slow strangers cannot lock real sources out. An authenticated source is admitted     */
/* only if its VF is within max_vram_bytes and what its session will hold (the VF and the       */
/* engine's buffers for it) fits the memory budget beside the sessions already admitted: the    */
/* server reserves that at admission, before open_device or any buffer, and releases it when    */
/* the session ended. A refused source is told why with VFMIG_ETOOBIG or VFMIG_EMEMLIMIT (as    */
/* VFMIG_EBUSY beyond max_sessions) and keeps running its VF.                                   */
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
    /* Fields are only appended from here on. The struct has no size member, so the library is
     * told the caller's size instead: vfmig_server_config_init and vfmig_server_create are
     * macros (below) that pass sizeof(*cfg) to their _sized calls, and read or write only what
     * that size covers (fields beyond it take their defaults). A binary built before these
     * fields calls the plain functions, which see the struct as it was (up to timeout_ms). */
    uint64_t max_vram_bytes;    /* largest VF admitted (sum of its ranges); larger ones are refused
                                   with VFMIG_ETOOBIG before anything is allocated for them;
                                   0 = VFMIG_SERVER_DEFAULT_MAX_VRAM or the memory budget,
                                   whichever is smaller */
    uint64_t max_memory_bytes;  /* memory budget of all sessions together: each reserves, at
                                   admission, its VF plus the engine's buffers for it (page
                                   records, stream, decode, key and state buffers; sized by what
                                   the source announced); one that does not fit beside those
                                   admitted is refused with VFMIG_EMEMLIMIT. The mutable state,
                                   whose size comes only with it in the blackout, is reserved then
                                   (the migration fails the same way, rolled back, if it does not
                                   fit).
                                   0 = this host's physical memory; UINT64_MAX = no budget (for
                                   devices whose VRAM is not host memory, count it yourself) */
} vfmig_server_config;

#define VFMIG_SERVER_DEFAULT_MAX_VRAM (64ull << 30)

typedef struct vfmig_server_counters {
    uint64_t links;             /* links accepted (stream setup done) */
    uint64_t refused;           /* connections that ended before a session (all reasons) */
    uint64_t sessions_ok, sessions_failed;
    uint32_t active_sessions, pending_handshakes;
    /* Fields are only appended from here on (vfmig_server_get_counters passes the size). */
    uint64_t refused_busy;      /* of `refused`: beyond max_sessions (VFMIG_EBUSY) */
    uint64_t refused_vram;      /* of `refused`: VF over max_vram_bytes (VFMIG_ETOOBIG) */
    uint64_t refused_memory;    /* of `refused`: no room in the memory budget (VFMIG_EMEMLIMIT),
                                   at admission or for a mutable state larger than reserved */
    uint64_t reserved_bytes;    /* memory reserved now by the sessions admitted */
    uint64_t max_memory_bytes;  /* the budget in force (the default applied) */
    uint64_t max_vram_bytes;    /* the VF size limit in force (the default applied) */
} vfmig_server_counters;

/** Defaults as documented in vfmig_server_config. Writes `size` bytes of *cfg at most (the
 *  caller's sizeof; the macro vfmig_server_config_init passes it). */
VFMIG_API void vfmig_server_config_init_sized(vfmig_server_config *cfg, size_t size);
/** Older binaries' entry point: the struct as it was before max_vram_bytes. */
VFMIG_API void vfmig_server_config_init(vfmig_server_config *cfg);
#define vfmig_server_config_init(cfg) vfmig_server_config_init_sized((cfg), sizeof(*(cfg)))
/** 1 if every address the endpoint's host resolves to is loopback, 0 if not, <0 on a bad endpoint. */
VFMIG_API int vfmig_endpoint_is_loopback(const char *endpoint);
/** Listens. VFMIG_EAUTH (with a message) for a non-loopback endpoint without a key unless
 *  allow_insecure; VFMIG_EINVAL for a short key, missing callbacks, a cfg_size too small for the
 *  struct before max_vram_bytes, or max_vram_bytes over max_memory_bytes (no VF could ever be
 *  admitted); listen errors as vfmig_listen. Reads cfg_size bytes of *cfg at most (the macro
 *  vfmig_server_create passes sizeof(*cfg)). *out is the caller's; free with
 *  vfmig_server_destroy. */
VFMIG_API int vfmig_server_create_sized(const vfmig_server_config *cfg, size_t cfg_size,
                                        const vfmig_server_callbacks *cb, vfmig_server **out, char *err,
                                        size_t errlen);
/** Older binaries' entry point: the struct as it was before max_vram_bytes (defaults beyond). */
VFMIG_API int vfmig_server_create(const vfmig_server_config *cfg, const vfmig_server_callbacks *cb,
                                  vfmig_server **out, char *err, size_t errlen);
#define vfmig_server_create(cfg, cb, out, err, errlen)                                             \
    vfmig_server_create_sized((cfg), sizeof(*(cfg)), (cb), (out), (err), (errlen))
/** The bound port. */
VFMIG_API int vfmig_server_port(const vfmig_server *srv);
/** Serves on the calling thread until vfmig_server_stop; then cancels the sessions in flight
 *  (usual rollback: their sources resume their VFs), waits for every connection thread and
 *  returns VFMIG_OK. Once per server. */
VFMIG_API int vfmig_server_run(vfmig_server *srv);
/** Makes run return. Any thread, and async-signal-safe (one atomic store). */
VFMIG_API void vfmig_server_stop(vfmig_server *srv);
/** Counters so far, into a struct of `size` bytes as the caller compiled it (the macro
 *  vfmig_server_get_counters passes it): a smaller (older) one gets the fields it knows.
 *  VFMIG_EINVAL for NULL or a size of 0. Any thread. */
VFMIG_API int vfmig_server_get_counters_sized(vfmig_server *srv, vfmig_server_counters *out, size_t size);
/** Older binaries' entry point: the struct as it was before refused_busy. */
VFMIG_API void vfmig_server_get_counters(vfmig_server *srv, vfmig_server_counters *out);
#define vfmig_server_get_counters(srv, out) vfmig_server_get_counters_sized((srv), (out), sizeof(*(out)))
/** Frees a server that is not running (accepts NULL). */
VFMIG_API void vfmig_server_destroy(vfmig_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* VFMIG_H */
