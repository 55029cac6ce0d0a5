/* tests/test_endpoint.c - endpoint strings, good and bad, with the exact messages. */
#include "transport/link.h"
#include "testutil.h"

static void good(const char *s, int kind, const char *host, unsigned port, unsigned streams)
{
    vfmig_endpoint ep;
    char err[256] = "";
    int r = vfmig__endpoint_parse(s, &ep, err, sizeof(err));
    if (r)
        T_FAIL("'%s' rejected: %s", s, err);
    ASSERT_EQ(ep.kind, kind);
    if (strcmp(ep.host, host))
        T_FAIL("'%s': host '%s', expected '%s'", s, ep.host, host);
    ASSERT_EQ(ep.port, port);
    ASSERT_EQ(ep.streams, streams);
}

static void bad(const char *s, const char *want)
{
    vfmig_endpoint ep;
    char err[256] = "";
    int r = vfmig__endpoint_parse(s, &ep, err, sizeof(err));
    if (r != VFMIG_EADDR)
        T_FAIL("'%s' gave %d, expected VFMIG_EADDR", s ? s : "(null)", r);
    if (!strstr(err, want))
        T_FAIL("'%s': message '%s' does not contain '%s'", s ? s : "(null)", err, want);
}

int main(void)
{
    good("tcp://127.0.0.1:9000", VFMIG_LINK_TCP, "127.0.0.1", 9000, 1);
    good("127.0.0.1:0", VFMIG_LINK_TCP, "127.0.0.1", 0, 1);
    good("tcp://10.1.2.3:65535?streams=64", VFMIG_LINK_TCP, "10.1.2.3", 65535, 64);
    good("tcp://[::1]:7000?streams=4", VFMIG_LINK_TCP, "::1", 7000, 4);
    good("[fe80::1%eth0]:1", VFMIG_LINK_TCP, "fe80::1%eth0", 1, 1);
    good("[::ffff:10.0.0.1]:80", VFMIG_LINK_TCP, "::ffff:10.0.0.1", 80, 1);
    good("localhost:1234", VFMIG_LINK_TCP, "localhost", 1234, 1);
    good("tcp://host-a.example.org:22?streams=1", VFMIG_LINK_TCP, "host-a.example.org", 22, 1);
    good("rdma://192.168.0.9:4791?qps=8", VFMIG_LINK_RDMA, "192.168.0.9", 4791, 8);
    good("rdma://[fd00::9]:4791", VFMIG_LINK_RDMA, "fd00::9", 4791, 1);

    bad(NULL, "endpoint is empty");
    bad("", "endpoint is empty");
    bad("udp://1.2.3.4:5", "unknown scheme 'udp'");
    bad("tcp://1.2.3.4", "missing port");
    bad("1.2.3.4:", "missing port after ':'");
    bad("tcp://1.2.3.4:99999", "port '99999' out of range 0-65535");
    bad("tcp://1.2.3.4:65536", "port '65536' out of range 0-65535");
    bad("tcp://1.2.3.4:12345678901", "port '12345678901' out of range 0-65535");
    bad("tcp://1.2.3.4:80x", "port '80x' is not a number");
    bad("tcp://1.2.3.4:-1", "port '-1' is not a number");
    bad("tcp://:80", "missing host");
    bad("tcp://::1:80", "IPv6 address must be in brackets");
    bad("tcp://[::1:80", "missing ']'");
    bad("tcp://[::1]80", "missing ':PORT' after ']'");
    bad("tcp://[]:80", "empty IPv6 address");
    bad("tcp://[::g]:80", "bad character 'g' in IPv6 address");
    bad("tcp://bad host:80", "bad host 'bad host'");
    bad("tcp://1.2.3.4:80?streams=0", "streams '0' out of range 1-64");
    bad("tcp://1.2.3.4:80?streams=65", "streams '65' out of range 1-64");
    bad("tcp://1.2.3.4:80?streams=x", "streams 'x' is not a number");
    bad("tcp://1.2.3.4:80?streams=", "streams '' is not a number");
    bad("tcp://1.2.3.4:80?streams", "option 'streams' needs a value");
    bad("tcp://1.2.3.4:80?qps=2", "unknown option 'qps' (tcp endpoints take 'streams')");
    bad("rdma://1.2.3.4:80?streams=2", "unknown option 'streams' (rdma endpoints take 'qps')");
    bad("tcp://1.2.3.4:80?", "empty option list");
    bad("tcp://1.2.3.4:80?streams=2&", "trailing '&'");
    bad("tcp://1.2.3.4:80?foo=1", "unknown option 'foo'");
    bad("junk", "missing port");

    /* NULL err buffer is fine. */
    vfmig_endpoint ep;
    ASSERT_EQ(vfmig__endpoint_parse("x", &ep, NULL, 0), VFMIG_EADDR);
    printf("test_endpoint: ok\n");
    return 0;
}
