/*
 * tests/fault_proxy.h - a loopback TCP proxy that sits between a migration source and target and
 * breaks the stream at a chosen frame.
 *
 * It listens on 127.0.0.1:0; every connection the source opens (control first, then the data
 * streams) gets its own connection to the real target and its own forwarding thread. Both
 * directions are parsed into frames (transport/wire.h), so a fault is aimed by frame: direction,
 * stream, type, round and "the n-th such frame" - counted, never timed, so a case hits the same
 * frame on every run. Exactly one frame gets the action. Every wait is a poll with a short
 * timeout; the proxy ends its threads when both ends hang up, on fault_proxy_stop, or at the
 * latest after max_life_ms.
 */
#ifndef VFMIG_TESTS_FAULT_PROXY_H
#define VFMIG_TESTS_FAULT_PROXY_H

#include <stdint.h>

typedef enum fp_action {
    FP_NONE = 0,
    FP_TRUNCATE, /* forward the first truncate_at bytes of the frame, then close both sides */
    FP_FLIP,     /* flip flip_mask at byte flip_byte of the frame (header or payload) */
    FP_DUP,      /* forward the frame twice */
    FP_REORDER,  /* forward the next frame of the same direction first, then this one */
    FP_DELAY,    /* hold the frame (and everything behind it in that direction) delay_ms */
    FP_DROP,     /* do not forward the frame */
    FP_SILENT    /* drop it and stop forwarding on every connection, both ways, without closing */
} fp_action;

enum { FP_TO_TARGET = 0, FP_TO_SOURCE = 1 };
#define FP_ANY (-1)      /* stream / type / round bound: any */
#define FP_DATA (-2)     /* stream: any data stream (1..N), not control */
#define FP_FLIP_PAYLOAD (-1) /* flip_byte: the middle of the payload (the header if none) */

typedef struct fp_match {
    int dir;            /* FP_TO_TARGET or FP_TO_SOURCE */
    int stream;         /* 0 = control, k = data stream k, FP_DATA, FP_ANY */
    int type;           /* vfmig_frame_type or FP_ANY */
    int64_t round_min;  /* inclusive bounds on the frame's round field, FP_ANY = none */
    int64_t round_max;
    unsigned nth;       /* act on the n-th matching frame (1-based; 0 counts as 1) */
} fp_match;

typedef struct fp_config {
    int target_port;      /* the real target listens on 127.0.0.1:target_port */
    fp_match match;
    fp_action action;
    uint32_t truncate_at; /* FP_TRUNCATE: bytes of the frame forwarded (clamped below its size) */
    int32_t flip_byte;    /* FP_FLIP: offset in the frame (0..39 header), or FP_FLIP_PAYLOAD */
    uint8_t flip_mask;    /* FP_FLIP: bits flipped (0 = 0x01) */
    uint32_t delay_ms;    /* FP_DELAY */
    uint32_t max_life_ms; /* hard bound on the proxy's life (0 = 60000) */
} fp_config;

typedef struct fp_report {
    int fired;            /* the action was applied */
    char hit[192];        /* the frame it was applied to */
    unsigned connections;
    uint64_t frames[2];   /* frames seen per direction */
} fp_report;

typedef struct fault_proxy fault_proxy;

/** Starts listening and accepting. VFMIG-independent errors: -1 with errno. */
int fault_proxy_start(const fp_config *cfg, fault_proxy **out);
/** The port the source should connect to. */
int fault_proxy_port(const fault_proxy *p);
/** What happened so far. Any thread. */
void fault_proxy_report(fault_proxy *p, fp_report *r);
/** Closes every connection, joins every thread, frees. Accepts NULL. */
void fault_proxy_stop(fault_proxy *p);
/** "truncate", "flip", ... */
const char *fp_action_name(fp_action a);

#endif
