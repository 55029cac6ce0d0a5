/*
 * engine/pin.c - worker placement with hwloc.
 *
 * "none": threads float. A CPU list ("0-3,8"): worker i is bound to the i-th CPU of the list,
 * wrapping. "auto": workers float over the CPUs of the NUMA node nearest the device (its node
 * given by the embedder) or else nearest the NIC that carries the link (found by hwloc's I/O
 * discovery); the page copies then stay on the memory controller the device and NIC DMA to.
 * With neither known, or on a machine with one NUMA node, threads float.
 */
#include <hwloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/session.h"

struct vfmig_pinner {
    hwloc_topology_t topo;
    hwloc_bitmap_t cpus; /* CPUs to use, in order; NULL = do not pin */
    int ncpus;
    int numa_nodes;
    bool whole_set;      /* auto: each worker floats over all of `cpus` */
    char spec[64];
    char why[96];        /* where the auto placement came from */
};

/* CPUs of the node nearest the device or NIC, or NULL. */
static hwloc_bitmap_t locality(vfmig_pinner *p, int device_node, const char *nic)
{
    if (p->numa_nodes <= 1)
        return NULL;
    if (device_node >= 0) {
        hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(p->topo, (unsigned)device_node);
        if (n && n->cpuset && !hwloc_bitmap_iszero(n->cpuset)) {
            snprintf(p->why, sizeof(p->why), "device on NUMA node %d", device_node);
            return hwloc_bitmap_dup(n->cpuset);
        }
    }
    if (nic && *nic) {
        for (hwloc_obj_t o = hwloc_get_next_osdev(p->topo, NULL); o; o = hwloc_get_next_osdev(p->topo, o)) {
            if (!o->name || strcmp(o->name, nic))
                continue;
            hwloc_obj_t a = hwloc_get_non_io_ancestor_obj(p->topo, o);
            if (a && a->cpuset && !hwloc_bitmap_iszero(a->cpuset)) {
                snprintf(p->why, sizeof(p->why), "NIC %s", nic);
                return hwloc_bitmap_dup(a->cpuset);
            }
        }
    }
    return NULL;
}

void vfmig__pinner_destroy(vfmig_pinner *p)
{
    if (!p)
        return;
    if (p->cpus)
        hwloc_bitmap_free(p->cpus);
    if (p->topo)
        hwloc_topology_destroy(p->topo);
    free(p);
}

int vfmig__pinner_create(const char *spec, int device_node, const char *nic, vfmig_pinner **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    vfmig_pinner *p = calloc(1, sizeof(*p));
    if (!p)
        return VFMIG_ENOMEM;
    snprintf(p->spec, sizeof(p->spec), "%s", spec ? spec : "auto");
    if (hwloc_topology_init(&p->topo) || hwloc_topology_load(p->topo)) {
        snprintf(err, errlen, "hwloc could not read the machine's topology");
        vfmig__pinner_destroy(p);
        return VFMIG_EDEVICE;
    }
    p->numa_nodes = hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_NUMANODE);
    /* I/O discovery (PCI, udev) is slow and not thread-safe in every backend: only when a NIC's
     * node could matter, i.e. a real interface on a machine with several nodes. */
    if (!strcmp(p->spec, "auto") && nic && *nic && strcmp(nic, "lo") && p->numa_nodes > 1 && device_node < 0) {
        hwloc_topology_t io;
        if (!hwloc_topology_init(&io)) {
            if (!hwloc_topology_set_io_types_filter(io, HWLOC_TYPE_FILTER_KEEP_IMPORTANT) && !hwloc_topology_load(io)) {
                hwloc_topology_destroy(p->topo);
                p->topo = io;
            } else {
                hwloc_topology_destroy(io);
            }
        }
    }
    if (!strcmp(p->spec, "none")) {
        *out = p;
        return VFMIG_OK;
    }
    if (!strcmp(p->spec, "auto")) {
        p->cpus = locality(p, device_node, nic);
        p->whole_set = true;
        p->ncpus = p->cpus ? hwloc_bitmap_weight(p->cpus) : 0;
        *out = p;
        return VFMIG_OK;
    }
    /* A CPU list: digits, commas and dashes only, each CPU present on this machine. */
    p->cpus = hwloc_bitmap_alloc();
    if (!p->cpus) {
        vfmig__pinner_destroy(p);
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
        vfmig__pinner_destroy(p);
        return VFMIG_EINVAL;
    }
    p->ncpus = hwloc_bitmap_weight(p->cpus);
    *out = p;
    return VFMIG_OK;
bad:
    snprintf(err, errlen, "pinning '%s': expected auto, none or a CPU list like 0-3,8", p->spec);
    vfmig__pinner_destroy(p);
    return VFMIG_EINVAL;
}

int vfmig__pinner_bind(vfmig_pinner *p, unsigned index)
{
    if (!p || !p->cpus || p->ncpus <= 0)
        return -1;
    if (p->whole_set)
        return hwloc_set_cpubind(p->topo, p->cpus, HWLOC_CPUBIND_THREAD) ? -1 : hwloc_bitmap_first(p->cpus);
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

void vfmig__pinner_describe(const vfmig_pinner *p, char *buf, size_t len)
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
        snprintf(buf, len, "workers %s CPUs %s%s%s (machine: %d NUMA nodes, %d cores, %d PUs)",
                 p->whole_set ? "float over" : "bound one each to", list, p->why[0] ? ", near the " : "",
                 p->why, p->numa_nodes, cores, pus);
    } else {
        snprintf(buf, len, "%s: threads not bound (machine: %d NUMA node%s, %d cores, %d PUs; device and NIC locality unknown)",
                 p->spec, p->numa_nodes, p->numa_nodes == 1 ? "" : "s", cores, pus);
    }
}
