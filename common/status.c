/* common/status.c - status names and messages, version, enum names. */
#include "vfmig.h"

unsigned vfmig_version_number(void)
{
    return VFMIG_VERSION_NUMBER;
}

const char *vfmig_strerror(int status)
{
    switch (status) {
#define VFMIG_STATUS_MSG_(name, value, msg)                                                         \
    case value:                                                                                   \
        return msg;
        VFMIG_STATUS_MAP(VFMIG_STATUS_MSG_)
#undef VFMIG_STATUS_MSG_
    }
    return "unknown status";
}

const char *vfmig_status_name(int status)
{
    switch (status) {
#define VFMIG_STATUS_NAME_(name, value, msg)                                                        \
    case value:                                                                                   \
        return "VFMIG_" #name;
        VFMIG_STATUS_MAP(VFMIG_STATUS_NAME_)
#undef VFMIG_STATUS_NAME_
    }
    return "VFMIG_E?";
}

const char *vfmig_vf_state_name(vfmig_vf_state s)
{
    switch (s) {
    case VFMIG_VF_RUNNING_ON_SOURCE: return "running-on-source";
    case VFMIG_VF_RESUMED_ON_TARGET: return "resumed-on-target";
    case VFMIG_VF_NOT_RESUMED: return "not-resumed";
    case VFMIG_VF_IN_DOUBT: return "in-doubt";
    }
    return "?";
}

const char *vfmig_phase_name(vfmig_phase p)
{
    switch (p) {
    case VFMIG_PHASE_IDLE: return "idle";
    case VFMIG_PHASE_HANDSHAKE: return "handshake";
    case VFMIG_PHASE_PRECOPY: return "pre-copy";
    case VFMIG_PHASE_BLACKOUT: return "blackout";
    case VFMIG_PHASE_DONE: return "done";
    case VFMIG_PHASE_FAILED: return "failed";
    }
    return "?";
}

const char *vfmig_switch_reason_name(vfmig_switch_reason r)
{
    switch (r) {
    case VFMIG_SWITCH_NONE: return "none";
    case VFMIG_SWITCH_CONVERGED: return "converged";
    case VFMIG_SWITCH_MAX_ROUNDS: return "round-limit";
    case VFMIG_SWITCH_MAX_TIME: return "time-limit";
    case VFMIG_SWITCH_NO_PROGRESS: return "no-progress";
    case VFMIG_SWITCH_BUDGET_MISS: return "budget-miss-switch";
    case VFMIG_SWITCH_REQUESTED: return "requested";
    }
    return "?";
}
