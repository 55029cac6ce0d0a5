/* transport/endpoint.c - endpoint strings: tcp://HOST:PORT?streams=N, rdma://HOST:PORT?qps=N,
 * HOST:PORT. Every rejection names the exact part that is wrong. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/link_impl.h"

void vfmig__seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#define EADDR_(...) (vfmig__seterr(err, errlen, __VA_ARGS__), VFMIG_EADDR)

/* Parses a decimal number in [lo, hi] from s[0..n). */
static int parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return v < lo || v > hi ? -2 : 0;
}

static int valid_hostname(const char *h)
{
    for (; *h; h++)
        if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.' && *h != '_')
            return 0;
    return 1;
}

int vfmig__endpoint_parse_ex(const char *s, vfmig_endpoint *ep, int *explicit_streams, char *err,
                            size_t errlen)
{
    memset(ep, 0, sizeof(*ep));
    ep->streams = 1;
    if (explicit_streams)
        *explicit_streams = 0;
    if (!s || !*s)
        return EADDR_("endpoint is empty (expected tcp://HOST:PORT, rdma://HOST:PORT or HOST:PORT)");
    const char *p = s;
    ep->kind = VFMIG_LINK_TCP; /* no scheme: tcp */
    const char *sep = strstr(s, "://");
    if (sep) {
        ep->kind = vfmig__link_scheme_kind(s, (size_t)(sep - s));
        if (!ep->kind) {
            char known[64] = "";
            for (int k = 1; vfmig__link_scheme(k); k++)
                snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s", k > 1 ? " or " : "",
                         vfmig__link_scheme(k)->name);
            return EADDR_("endpoint '%s': unknown scheme '%.*s' (expected %s)", s, (int)(sep - s), s, known);
        }
        p = sep + 3;
    }
    const vfmig_link_scheme *sc = vfmig__link_scheme(ep->kind);
    const char *opt_name = sc->count_opt;
    /* Host: [v6] or up to the last ':' before '?'. */
    const char *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    const char *host, *host_end, *colon;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end)
            return EADDR_("endpoint '%s': missing ']' after IPv6 address", s);
        colon = host_end + 1;
        if (colon >= end || *colon != ':')
            return EADDR_("endpoint '%s': missing ':PORT' after ']'", s);
        if (host_end == host)
            return EADDR_("endpoint '%s': empty IPv6 address", s);
        int zone = 0; /* after '%' comes an interface name */
        for (const char *c = host; c < host_end; c++) {
            if (*c == '%' && !zone)
                zone = 1;
            else if (zone ? !isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.'
                          : !isxdigit((unsigned char)*c) && *c != ':' && *c != '.')
                return EADDR_("endpoint '%s': bad character '%c' in IPv6 address", s, *c);
        }
    } else {
        host = p;
        colon = NULL;
        for (const char *c = p; c < end; c++)
            if (*c == ':')
                colon = c;
        if (!colon)
            return EADDR_("endpoint '%s': missing port (expected HOST:PORT)", s);
        host_end = colon;
        if (memchr(host, ':', (size_t)(host_end - host)))
            return EADDR_("endpoint '%s': IPv6 address must be in brackets ([::1]:PORT)", s);
        if (host_end == host)
            return EADDR_("endpoint '%s': missing host", s);
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen >= sizeof(ep->host))
        return EADDR_("endpoint '%s': host longer than %zu characters", s, sizeof(ep->host) - 1);
    memcpy(ep->host, host, hlen);
    ep->host[hlen] = 0;
    if (*p != '[' && !valid_hostname(ep->host))
        return EADDR_("endpoint '%s': bad host '%s'", s, ep->host);

    const char *port = colon + 1;
    size_t plen = (size_t)(end - port);
    long v;
    int r = parse_num(port, plen, 0, 65535, &v);
    if (plen == 0)
        return EADDR_("endpoint '%s': missing port after ':'", s);
    if (r == -2 || (r == -1 && plen > 9 && strspn(port, "0123456789") >= plen))
        return EADDR_("endpoint '%s': port '%.*s' out of range 0-65535", s, (int)plen, port);
    if (r < 0)
        return EADDR_("endpoint '%s': port '%.*s' is not a number", s, (int)plen, port);
    ep->port = (uint16_t)v;

    /* Options: name=value joined by '&'. */
    const char *o = q ? q + 1 : NULL;
    if (q && !*o)
        return EADDR_("endpoint '%s': empty option list after '?'", s);
    while (o && *o) {
        const char *oe = strchr(o, '&');
        if (!oe)
            oe = o + strlen(o);
        const char *eq = memchr(o, '=', (size_t)(oe - o));
        size_t nlen = (size_t)((eq ? eq : oe) - o);
        if (nlen != strlen(opt_name) || strncmp(o, opt_name, nlen))
            return EADDR_("endpoint '%s': unknown option '%.*s' (%s endpoints take '%s')", s,
                          (int)nlen, o, sc->name, opt_name);
        if (!eq)
            return EADDR_("endpoint '%s': option '%s' needs a value", s, opt_name);
        size_t vlen = (size_t)(oe - eq - 1);
        r = parse_num(eq + 1, vlen, 1, VFMIG_MAX_STREAMS, &v);
        if (r == -1)
            return EADDR_("endpoint '%s': %s '%.*s' is not a number", s, opt_name, (int)vlen, eq + 1);
        if (r == -2)
            return EADDR_("endpoint '%s': %s '%.*s' out of range 1-%d", s, opt_name, (int)vlen,
                          eq + 1, VFMIG_MAX_STREAMS);
        ep->streams = (uint32_t)v;
        if (explicit_streams)
            *explicit_streams = 1;
        o = *oe ? oe + 1 : NULL;
        if (o && !*o)
            return EADDR_("endpoint '%s': trailing '&'", s);
    }
    return VFMIG_OK;
}

int vfmig__endpoint_parse(const char *s, vfmig_endpoint *ep, char *err, size_t errlen)
{
    return vfmig__endpoint_parse_ex(s, ep, NULL, err, errlen);
}

int vfmig_endpoint_validate(const char *endpoint, char *err, size_t errlen)
{
    vfmig_endpoint ep;
    return vfmig__endpoint_parse(endpoint, &ep, err, errlen);
}
