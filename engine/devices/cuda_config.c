/*
 * engine/devices/cuda_config.c - the CUDA device's configuration defaults, one definition for
 * both builds (cuda.cu with the toolkit, cuda_none.c without it).
 */
#include "vfmig.h"

#include <string.h>

void vfmig_cuda_config_init(vfmig_cuda_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->page_size = 64u << 10;
    cfg->staging_bytes = 4u << 20;
    cfg->state_version = 1;
}
