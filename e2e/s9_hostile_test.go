package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/translate"
)

// maxNames is deltaeds' --max-subscriptions-per-stream in scenario 9.
const maxNames = 20_000

// typeCluster is a type deltaeds does not serve.
const typeCluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// Scenario 9: odd and hostile input, from Kubernetes and from clients. FQDN slices, slices
// without the service-name label, a Service with 1,000 slices, a client subscribing to a million
// names, garbage requests: each gets a clear error or is skipped and counted, and deltaeds keeps
// serving everyone else throughout.
func TestHostileInput(t *testing.T) {
	const ns = "s9-hostile"
	e := scenario(t, ns)
	steady := e.service(t, ns, "steady", 3)
	steadyName := translate.ClusterName(ns, "steady", "http")
	p := e.deltaeds(t, harness.DeltaedsOptions{Name: "deltaeds-s9", MaxSubscriptionsPerStream: maxNames})

	// Bystanders: well-behaved clients that must not notice anything.
	by := e.fleet(t, envoyfleet.Options{Size: 3, Target: p.XDSAddress(), NodePrefix: "s9-bystander"})
	by.Subscribe(steadyName)
	waitAll(t, "the steady Service", by, holds(steadyName, steady.IPs(), nil))

	conn, err := grpc.NewClient(p.XDSAddress(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	slices := e.cp.Client().DiscoveryV1().EndpointSlices(ns)
	ctx := t.Context()

	t.Run("FQDN slices are skipped and counted", func(t *testing.T) {
		if _, err := e.cluster.CreateService(ctx, ns, "ext", nil, []harness.ServicePort{httpPort}); err != nil {
			t.Fatal(err)
		}
		ips := []string{e.cluster.AllocIP(), e.cluster.AllocIP()}
		for _, s := range []*discoveryv1.EndpointSlice{
			manualSlice(ns, "ext-ipv4", "ext", discoveryv1.AddressTypeIPv4, ips...),
			manualSlice(ns, "ext-fqdn", "ext", discoveryv1.AddressTypeFQDN, "db.example.com", "cache.example.com"),
		} {
			if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		name := translate.ClusterName(ns, "ext", "http")
		c := e.fleet(t, envoyfleet.Options{Size: 1, Target: p.XDSAddress(), NodePrefix: "s9-ext"})
		c.Subscribe(name)
		waitAll(t, "the IPv4 endpoints only", c, holds(name, ips, nil))
		waitMetric(t, p, "deltaeds_translate_skipped_total", []string{"reason", "fqdn_slice"}, func(v float64) bool { return v >= 1 })
	})

	t.Run("slices without the service-name label are ignored and counted", func(t *testing.T) {
		s := manualSlice(ns, "orphan", "", discoveryv1.AddressTypeIPv4, e.cluster.AllocIP())
		if _, err := slices.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitMetric(t, p, "deltaeds_endpointslice_unlabelled_total", nil, func(v float64) bool { return v >= 1 })
		// Nothing is published for it: a client asking for the name it would have gets an
		// empty CLA at once, so it routes to nothing (and an Envoy's cluster stops warming).
		name := translate.ClusterName(ns, "orphan", "http")
		c := e.fleet(t, envoyfleet.Options{Size: 1, Target: p.XDSAddress(), NodePrefix: "s9-orphan"})
		c.Subscribe(name)
		waitAll(t, "an empty CLA for a name nothing publishes", c, routesNothing(name))
	})

	t.Run("a Service with 1,000 slices", func(t *testing.T) {
		const nSlices, perSlice = 1000, 2
		if _, err := e.cluster.CreateService(ctx, ns, "huge", nil, []harness.ServicePort{httpPort}); err != nil {
			t.Fatal(err)
		}
		var all []string
		batches := make([][]string, nSlices)
		for i := range batches {
			for range perSlice {
				ip := e.cluster.AllocIP()
				batches[i] = append(batches[i], ip)
				all = append(all, ip)
			}
		}
		start := time.Now()
		if err := harness.Parallel(ctx, 16, nSlices, func(ctx context.Context, i int) error {
			s := manualSlice(ns, fmt.Sprintf("huge-%04d", i), "huge", discoveryv1.AddressTypeIPv4, batches[i]...)
			_, err := slices.Create(ctx, s, metav1.CreateOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		created := time.Since(start)
		name := translate.ClusterName(ns, "huge", "http")
		c := e.fleet(t, envoyfleet.Options{Size: 2, Target: p.XDSAddress(), NodePrefix: "s9-huge"})
		c.Subscribe(name)
		waitAll(t, "all 2,000 endpoints", c, holds(name, all, nil))
		t.Logf("1,000 slices created in %s; every client holds all %d endpoints %s later",
			created.Round(100*time.Millisecond), len(all), time.Since(start.Add(created)).Round(100*time.Millisecond))
	})

	t.Run("a million names in one request: request too large", func(t *testing.T) {
		names := make([]string, 1_000_000)
		for i := range names {
			names[i] = fmt.Sprintf("%s/name-%07d/http", ns, i)
		}
		s := deltaStream(t, conn)
		err := s.Send(&discoveryv3.DeltaDiscoveryRequest{
			Node: &corev3.Node{Id: "s9-million"}, TypeUrl: envoysim.TypeURLClusterLoadAssignment,
			ResourceNamesSubscribe: names,
		})
		if err == nil || errors.Is(err, io.EOF) {
			_, err = s.Recv()
		}
		expectCode(t, err, codes.ResourceExhausted, "")
	})

	t.Run("names in batches toward a million: stopped at the limit", func(t *testing.T) {
		s := deltaStream(t, conn)
		// Read whatever comes (empty CLAs for names that do not exist) so deltaeds is never
		// blocked on this stream's flow control; the stream's end is what matters.
		ended := make(chan error, 1)
		go func() {
			for {
				if _, err := s.Recv(); err != nil {
					ended <- err
					return
				}
			}
		}()
		const batch = 5_000
		sent := 0
		var err error
		for sent < 1_000_000 {
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment}
			if sent == 0 {
				req.Node = &corev3.Node{Id: "s9-many"}
			}
			for i := range batch {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, fmt.Sprintf("%s/many-%07d/http", ns, sent+i))
			}
			if err = s.Send(req); err != nil {
				break // the stream has ended; its status comes from Recv
			}
			sent += batch
			if sent > 2*maxNames {
				break // well past the limit: wait for the verdict
			}
		}
		select {
		case err = <-ended:
		case <-time.After(waitTimeout):
			t.Fatalf("%d names subscribed on one stream, still open", sent)
		}
		expectCode(t, err, codes.ResourceExhausted, "max-subscriptions-per-stream")
		waitMetric(t, p, "deltaeds_xds_rejected_requests_total", []string{"reason", "too_many_names"}, func(v float64) bool { return v >= 1 })
	})

	t.Run("garbage requests", func(t *testing.T) {
		t.Run("no node on the first request", func(t *testing.T) {
			s := deltaStream(t, conn)
			_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNamesSubscribe: []string{steadyName}})
			_, err := s.Recv()
			expectCode(t, err, codes.InvalidArgument, "node")
		})
		t.Run("state of the world", func(t *testing.T) {
			s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "s9-sotw"}, TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNames: []string{steadyName}})
			_, err = s.Recv()
			expectCode(t, err, codes.Unimplemented, "DELTA_GRPC")
		})
		t.Run("another type on the EDS service", func(t *testing.T) {
			s, err := endpointservice.NewEndpointDiscoveryServiceClient(conn).DeltaEndpoints(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "s9-eds"}, TypeUrl: typeCluster, ResourceNamesSubscribe: []string{"x"}})
			_, err = s.Recv()
			expectCode(t, err, codes.InvalidArgument, "")
		})
		t.Run("bytes that are not a request", func(t *testing.T) {
			for _, garbage := range [][]byte{
				{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, // node: a length running past the end
				{0x12, 0x02, 0xff, 0xfe},             // type_url: not UTF-8
				{0x1a, 0x03, 'a', 0xc3, 0x28},        // a subscribed name: not UTF-8
				{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // no field at all
			} {
				s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
					"/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources", grpc.ForceCodec(rawCodec{}))
				if err != nil {
					t.Fatal(err)
				}
				_ = s.SendMsg(garbage)
				var out []byte
				err = s.RecvMsg(&out)
				expectCode(t, err, codes.Internal, "")
			}
		})
		t.Run("not HTTP/2 at all", func(t *testing.T) {
			for _, garbage := range [][]byte{randomBytes(t, 64<<10), []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")} {
				c, err := net.Dial("tcp", p.XDSAddress())
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(waitTimeout))
				_, _ = c.Write(garbage)
				// The server answers what it can and closes the connection.
				if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
					t.Errorf("reading until deltaeds closes the connection: %v", err)
				}
				c.Close()
			}
		})
		t.Run("odd but harmless requests keep the stream", func(t *testing.T) {
			s := deltaStream(t, conn)
			send := func(req *discoveryv3.DeltaDiscoveryRequest) {
				t.Helper()
				if err := s.Send(req); err != nil {
					t.Fatal(err)
				}
			}
			send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "s9-odd"}, TypeUrl: typeCluster, ResourceNamesSubscribe: []string{"*"}})
			send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResponseNonce: "not-a-nonce-of-yours"})
			send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment,
				ResourceNamesSubscribe: []string{"", "/", "//", "no-slash", "a/b/c/d", ns + "/", "é/ü/ß", strings.Repeat("x", 10_000)}})
			send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNamesUnsubscribe: []string{"never-subscribed"}})
			send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResourceNamesSubscribe: []string{steadyName}})
			// The stream stays up and still serves: steady arrives.
			deadline := time.Now().Add(waitTimeout)
			for time.Now().Before(deadline) {
				resp, err := s.Recv()
				if err != nil {
					t.Fatalf("the stream ended: %v", err)
				}
				if resp.GetTypeUrl() != envoysim.TypeURLClusterLoadAssignment {
					t.Errorf("a response of type %s, which the stream never got served", resp.GetTypeUrl())
				}
				for _, r := range resp.GetResources() {
					if r.GetName() == steadyName {
						t.Logf("odd names answered, stream still serving; ignored-types and stale-nonce counters: %v, %v",
							metrics(t, p).Value("deltaeds_xds_ignored_requests_total"), metrics(t, p).Value("deltaeds_xds_stale_nonces_total"))
						return
					}
				}
				_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: envoysim.TypeURLClusterLoadAssignment, ResponseNonce: resp.GetNonce()})
			}
			t.Fatal("steady never came")
		})
		waitMetric(t, p, "deltaeds_xds_ignored_requests_total", []string{"type_url", typeCluster}, func(v float64) bool { return v >= 1 })
		waitMetric(t, p, "deltaeds_xds_stale_nonces_total", nil, func(v float64) bool { return v >= 1 })
		waitMetric(t, p, "deltaeds_xds_rejected_requests_total", []string{"reason", "missing_node"}, func(v float64) bool { return v >= 1 })
	})

	// Through all of it deltaeds kept serving the bystanders: same streams, and a change now
	// reaches them.
	if !p.Alive() {
		t.Fatalf("deltaeds died: %v", p.ExitErr())
	}
	pods := steady.Pods()
	if err := steady.SetReady(ctx, pods[0], false); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "a change at the bystanders", by, holds(steadyName, []string{pods[1].IP, pods[2].IP}, nil))
	for i, c := range by.Clients {
		if s := c.Stats(); s.Reconnects != 0 || s.NACKs != 0 {
			t.Errorf("bystander %d: %d reconnects, %d NACKs", i, s.Reconnects, s.NACKs)
		}
	}
	if code, body, err := p.Get(ctx, "/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz after the hostile input: %d %s %v", code, body, err)
	}
}

// manualSlice is an EndpointSlice written by hand, as for a Service without selector; service ""
// leaves out the kubernetes.io/service-name label.
func manualSlice(ns, name, service string, at discoveryv1.AddressType, addrs ...string) *discoveryv1.EndpointSlice {
	labels := map[string]string{discoveryv1.LabelManagedBy: "e2e.deltaeds.test"}
	if service != "" {
		labels[discoveryv1.LabelServiceName] = service
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		AddressType: at,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr(httpPort.Name), Port: ptr(httpPort.TargetPort), Protocol: ptr(corev1.ProtocolTCP),
		}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// deltaStream opens a raw Delta ADS stream for the test.
func deltaStream(t *testing.T, conn *grpc.ClientConn) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// expectCode fails the test unless err is a gRPC status with code whose message contains hint.
func expectCode(t *testing.T, err error, code codes.Code, hint string) {
	t.Helper()
	st, _ := status.FromError(err)
	switch {
	case err == nil:
		t.Errorf("no error, want %v", code)
	case st.Code() != code:
		t.Errorf("error %v, want code %v", err, code)
	case !strings.Contains(st.Message(), hint):
		t.Errorf("error %q does not mention %q", st.Message(), hint)
	default:
		t.Logf("%v: %s", st.Code(), st.Message())
	}
}

// waitMetric waits until the metric (summed over samples matching kv) satisfies ok.
func waitMetric(t *testing.T, p *harness.Deltaeds, name string, kv []string, ok func(float64) bool) {
	t.Helper()
	var v float64
	if err := harness.Eventually(waitCtx(t), func() error {
		m, err := p.Metrics(t.Context())
		if err != nil {
			return err
		}
		if v = m.Value(name, kv...); !ok(v) {
			return fmt.Errorf("%s%v = %v", name, kv, v)
		}
		return nil
	}); err != nil {
		t.Errorf("waiting for %s%v: %v", name, kv, err)
	}
}

// rawCodec sends bytes as they are, to put garbage on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T is not []byte", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T is not *[]byte", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset by peer")
}
