/*
 * engine/pin.c - worker placement with hwloc.
 *
 * "none": threads float. A CPU list ("0-3,8"): worker i is bound to the i-th CPU of the list,
 * wrapping. "auto": workers are bound to the cores of the NUMA node nearest the device and NIC
 * when a node is known (VFMIG_NUMA_NODE-style hints come from the device later); on a machine
 * with a single NUMA node there is nothing to gain, and threads float.
 */
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/session.h"

struct vfmig_pinner {
    hwloc_topology_t topo;
    hwloc_bitmap_t cpus; /* CPUs to use, in order; NULL = do not pin */
    int ncpus;
    int numa_nodes;
    char spec[64];
};

void vfmig_pinner_destroy(vfmig_pinner *p)
{
    if (!p)
        return;
    if (p->cpus)
        hwloc_bitmap_free(p->cpus);
    if (p->topo)
        hwloc_topology_destroy(p->topo);
    free(p);
}

int vfmig_pinner_create(const char *spec, vfmig_pinner **out, char *err, size_t errlen)
{
    *out = NULL;
    vfmig_pinner *p = calloc(1, sizeof(*p));
    if (!p)
        return VFMIG_ENOMEM;
    snprintf(p->spec, sizeof(p->spec), "%s", spec ? spec : "auto");
    if (hwloc_topology_init(&p->topo) || hwloc_topology_load(p->topo)) {
        snprintf(err, errlen, "hwloc could not read the machine's topology");
        vfmig_pinner_destroy(p);
        return VFMIG_EDEVICE;
    }
    p->numa_nodes = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_NUMANODE);
    if (!strcmp(p->spec, "none") || !strcmp(p->spec, "auto")) {
        *out = p;
        return VFMIG_OK;
    }
    /* A CPU list: digits, commas and dashes only, each CPU present on this machine. */
    p->cpus = hwloc_bitmap_alloc();
    if (!p->cpus) {
        vfmig_pinner_destroy(p);
        return VFMIG_ENOMEM;
    }
    const char *c = p->spec;
    while (*c) {
        char *end;
        long a = strtol(c, &end, 10), b;
        if (end == c || a < 0 || a > 4095)
            goto bad;
        b = a;
        if (*end == '-') {
            c = end + 1;
            b = strtol(c, &end, 10);
            if (end == c || b < a || b > 4095)
                goto bad;
        }
        hwloc_bitmap_set_range(p->cpus, (unsigned)a, (int)b);
        if (*end == ',')
            end++;
        else if (*end)
            goto bad;
        c = end;
    }
    hwloc_const_bitmap_t online = hwloc_topology_get_allowed_cpuset(p->topo);
    if (!hwloc_bitmap_isincluded(p->cpus, online)) {
        snprintf(err, errlen, "pinning '%s': some CPUs are not on this machine", p->spec);
        vfmig_pinner_destroy(p);
        return VFMIG_EINVAL;
    }
    p->ncpus = hwloc_bitmap_weight(p->cpus);
    *out = p;
    return VFMIG_OK;
bad:
    snprintf(err, errlen, "pinning '%s': expected auto, none or a CPU list like 0-3,8", p->spec);
    vfmig_pinner_destroy(p);
    return VFMIG_EINVAL;
}

int vfmig_pinner_bind(vfmig_pinner *p, unsigned index)
{
    if (!p || !p->cpus || p->ncpus <= 0)
        return -1;
    int cpu = hwloc_bitmap_first(p->cpus);
    for (unsigned i = 0; i < index % (unsigned)p->ncpus; i++)
        cpu = hwloc_bitmap_next(p->cpus, cpu);
    hwloc_bitmap_t one = hwloc_bitmap_alloc();
    if (!one)
        return -1;
    hwloc_bitmap_only(one, (unsigned)cpu);
    int rc = hwloc_set_cpubind(p->topo, one, HWLOC_CPUBIND_THREAD);
    hwloc_bitmap_free(one);
    return rc ? -1 : cpu;
}

void vfmig_pinner_describe(const vfmig_pinner *p, char *buf, size_t len)
{
    if (!p) {
        snprintf(buf, len, "none");
        return;
    }
    int pus = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_PU);
    int cores = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE);
    if (p->cpus) {
        char list[64];
        hwloc_bitmap_list_snprintf(list, sizeof(list), p->cpus);
        snprintf(buf, len, "workers bound to CPUs %s (machine: %d NUMA nodes, %d cores, %d PUs)", list,
                 p->numa_nodes, cores, pus);
    } else {
        snprintf(buf, len, "%s: threads not bound (machine: %d NUMA node%s, %d cores, %d PUs; device and NIC locality unknown)",
                 p->spec, p->numa_nodes, p->numa_nodes == 1 ? "" : "s", cores, pus);
    }
}
