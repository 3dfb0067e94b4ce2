package harness

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParallel(t *testing.T) {
	var ran atomic.Int64
	if err := Parallel(context.Background(), 4, 100, func(context.Context, int) error { ran.Add(1); return nil }); err != nil || ran.Load() != 100 {
		t.Fatalf("ran %d of 100, err %v", ran.Load(), err)
	}
	boom := errors.New("boom")
	err := Parallel(context.Background(), 4, 100, func(_ context.Context, i int) error {
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Parallel(ctx, 2, 10, func(context.Context, int) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v on a cancelled context", err)
	}
}

func cla(groups ...*endpointv3.LocalityLbEndpoints) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: "ns/svc/http", Endpoints: groups}
}

func group(prio uint32, zone string, health corev3.HealthStatus, ips ...string) *endpointv3.LocalityLbEndpoints {
	g := &endpointv3.LocalityLbEndpoints{Priority: prio, Locality: &corev3.Locality{Zone: zone}}
	for _, ip := range ips {
		g.LbEndpoints = append(g.LbEndpoints, &endpointv3.LbEndpoint{
			HealthStatus: health,
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}}},
			}},
		})
	}
	return g
}

func TestCLAReaders(t *testing.T) {
	c := cla(
		group(0, "zone-a", corev3.HealthStatus_HEALTHY, "10.0.0.10", "10.0.0.9"),
		group(0, "zone-b", corev3.HealthStatus_UNHEALTHY, "10.0.0.3"),
		group(1, "zone-a", corev3.HealthStatus_HEALTHY, "10.0.0.4"),
		group(1, "zone-b", corev3.HealthStatus_DRAINING, "10.0.0.5"),
	)
	if n := Usable(c); n != 3 {
		t.Errorf("Usable = %d, want 3 (HEALTHY only here)", n)
	}
	if got := IPsAt(c, 0); !SameIPs(got, []string{"10.0.0.9", "10.0.0.10"}) {
		t.Errorf("IPsAt(0) = %v, numerically sorted usable IPs expected", got)
	}
	if got := IPsAt(c, 1); !SameIPs(got, []string{"10.0.0.4"}) {
		t.Errorf("IPsAt(1) = %v", got)
	}
	if Usable(nil) != 0 || Endpoints(nil) != nil {
		t.Error("a nil CLA is not empty")
	}
	if s := Summary(c); !strings.Contains(s, "p1/zone-a") || !strings.Contains(s, "DRAINING") {
		t.Errorf("Summary = %s", s)
	}
}

func TestTracker(t *testing.T) {
	tr := NewTracker(2, func(svc string) string { return "ns/" + svc + "/http" })
	t0 := time.Now()
	pod := Pod{Name: "p", IP: "10.0.0.1"}
	tr.Observe(Event{Kind: PodReady, Service: "svc", Pod: pod, At: t0})
	// Client 0 sees it before the API call returned: counted as 0, not negative.
	tr.Applied(0, "ns/svc/http", cla(group(0, "a", corev3.HealthStatus_HEALTHY, "10.0.0.1")), t0.Add(5*time.Millisecond))
	tr.Made(Event{Kind: PodReady, Service: "svc", Pod: pod, At: t0.Add(10 * time.Millisecond)})
	if st := tr.Stats(); st.Outstanding != 1 || st.Count != 1 || st.P50 != 0 {
		t.Fatalf("after one client: %+v", st)
	}
	// Client 1 first gets an unrelated update, then the one reflecting the change.
	tr.Applied(1, "ns/svc/http", cla(), t0.Add(20*time.Millisecond))
	tr.SlicesChanged("svc", EndpointState{mustAddr("10.0.0.1"): 0}, t0.Add(30*time.Millisecond))
	tr.Applied(1, "ns/svc/http", cla(group(0, "a", corev3.HealthStatus_HEALTHY, "10.0.0.1")), t0.Add(110*time.Millisecond))
	st := tr.Stats()
	if st.Outstanding != 0 || st.Count != 2 || st.Max != 100*time.Millisecond {
		t.Fatalf("after both: %+v", st)
	}
	if st.ControllerP50 != 20*time.Millisecond || st.ServerP99 != 80*time.Millisecond {
		t.Fatalf("split: %+v", st)
	}
	// Terminating is reflected by priority 1, or by the pod being gone already.
	tr.Observe(Event{Kind: PodTerminating, Service: "svc", Pod: pod, At: t0})
	tr.Applied(0, "ns/svc/http", cla(group(1, "a", corev3.HealthStatus_HEALTHY, "10.0.0.1")), t0.Add(time.Millisecond))
	tr.Applied(1, "ns/svc/http", cla(), t0.Add(time.Millisecond))
	if st := tr.Stats(); st.Outstanding != 0 || st.Count != 4 {
		t.Fatalf("terminating: %+v", st)
	}
}

func TestProxy(t *testing.T) {
	echo := func() (string, func()) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, c); c.Close() }()
			}
		}()
		return l.Addr().String(), func() { l.Close(); <-done }
	}
	a, stopA := echo()
	defer stopA()
	b, stopB := echo()
	defer stopB()
	p, err := NewProxy(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	roundTrip := func() error {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return err
	}
	if err := roundTrip(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	p.SetBackend(b)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection survived SetBackend")
	}
	if err := roundTrip(); err != nil {
		t.Fatalf("after the switch: %v", err)
	}
	p.SetBackend("")
	if err := roundTrip(); err == nil {
		t.Fatal("served with no backend")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
