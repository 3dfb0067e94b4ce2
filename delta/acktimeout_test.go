package delta

import (
	"strings"
	"testing"
	"time"

	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// clusterType is a second type the store serves in these tests, so a stream
// has responses of two types in flight.
const clusterType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// TestAckTimeout: a response that is neither ACKed nor NACKed within
// Config.AckTimeout ends its stream with DeadlineExceeded. The timeouts are
// short, and only outcomes are asserted, never how soon they came: "in time"
// cases answer at once and use a timeout far longer than that takes.
func TestAckTimeout(t *testing.T) {
	cases := []struct {
		name string
		opts Config
		run  func(t *testing.T, f *fixture, rs *rawStream)
	}{
		{"a client that never ACKs is ended with DeadlineExceeded", Config{AckTimeout: 100 * time.Millisecond}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			resp := rs.next()
			err := rs.fails()
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("err = %v, want DeadlineExceeded", err)
			}
			for _, want := range []string{EndpointType, resp.Nonce, "100ms", "--ack-timeout", "reconnect"} {
				if !strings.Contains(status.Convert(err).Message(), want) {
					t.Errorf("message %q does not mention %q", status.Convert(err).Message(), want)
				}
			}
			if n := f.counter("deltaeds_xds_ack_timeouts_total"); n != 1 {
				t.Errorf("ack timeouts = %v, want 1", n)
			}
			if got := f.labels("deltaeds_xds_ack_timeouts_total", "type_url"); len(got) != 1 || got[0] != EndpointType {
				t.Errorf("type_url labels %v", got)
			}
			waitFor(t, func() bool { return len(f.server.Streams()) == 0 })
		}},
		{"a client that ACKs every response in time is not ended", Config{AckTimeout: time.Second}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			rs.ack(rs.next())
			// Responses keep coming for longer than the timeout: each has
			// its own deadline, not the stream's first one.
			begin := time.Now()
			for port := uint32(2); time.Since(begin) < 2*time.Second; port++ {
				f.set(port, "a")
				rs.ack(rs.next())
				time.Sleep(100 * time.Millisecond)
			}
			// Nothing in flight: waiting is fine too.
			time.Sleep(1500 * time.Millisecond)
			rs.quiet()
			if n := f.counter("deltaeds_xds_ack_timeouts_total"); n != 0 {
				t.Fatalf("ack timeouts = %v", n)
			}
		}},
		{"a NACK answers a response too", Config{AckTimeout: time.Second}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			resp := rs.next()
			rs.send(&req{ResponseNonce: resp.Nonce, ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad"}})
			time.Sleep(1500 * time.Millisecond)
			rs.quiet()
			if n := f.counter("deltaeds_xds_ack_timeouts_total"); n != 0 {
				t.Fatalf("ack timeouts = %v", n)
			}
		}},
		{"a stale nonce does not answer the latest response", Config{AckTimeout: time.Second}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			first := rs.next()
			rs.ack(first)
			f.set(2, "a")
			second := rs.next()
			rs.ack(first) // stale
			err := rs.fails()
			if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), second.Nonce) {
				t.Fatalf("err = %v, want DeadlineExceeded naming nonce %s", err, second.Nonce)
			}
		}},
		{"each type has its own deadline; the error names the late one", Config{AckTimeout: time.Second}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			rs.ack(rs.next())
			rs.send(&req{TypeUrl: clusterType, ResourceNamesSubscribe: []string{"missing"}})
			late := rs.next() // the removal of "missing", never acknowledged
			if late.TypeUrl != clusterType {
				t.Fatalf("got a %s response", late.TypeUrl)
			}
			// Endpoint responses keep coming and are acknowledged at once
			// until the stream ends.
			var err error
			for port := uint32(2); err == nil; port++ {
				f.set(port, "a")
				select {
				case r, ok := <-rs.recv:
					if !ok {
						t.Fatal("stream closed without an error")
					}
					if r.err != nil {
						err = r.err
						break
					}
					if r.resp.TypeUrl != EndpointType {
						t.Fatalf("got a %s response", r.resp.TypeUrl)
					}
					// Not rs.ack: the stream may end before this is sent.
					_ = rs.s.Send(&req{TypeUrl: EndpointType, ResponseNonce: r.resp.Nonce})
					time.Sleep(50 * time.Millisecond)
				case <-time.After(testTimeout):
					t.Fatal("stream did not end within the test timeout")
				}
			}
			if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), clusterType) || !strings.Contains(err.Error(), late.Nonce) {
				t.Fatalf("err = %v, want DeadlineExceeded naming %s nonce %s", err, clusterType, late.Nonce)
			}
			if got := f.labels("deltaeds_xds_ack_timeouts_total", "type_url"); len(got) != 1 || got[0] != clusterType {
				t.Errorf("type_url labels %v", got)
			}
		}},
		{"with no timeout a response may wait for ever", Config{}, func(t *testing.T, f *fixture, rs *rawStream) {
			rs.first(&req{ResourceNamesSubscribe: []string{"a"}})
			resp := rs.next()
			time.Sleep(500 * time.Millisecond)
			select {
			case r := <-rs.recv:
				t.Fatalf("received %v while the response was in flight", r)
			default:
			}
			rs.ack(resp)
			rs.quiet()
			if n := f.counter("deltaeds_xds_ack_timeouts_total"); n != 0 {
				t.Fatalf("ack timeouts = %v", n)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.opts)
			f.store.RegisterType(clusterType, nil)
			f.set(1, "a", "b")
			f.store.MarkSynced()
			tc.run(t, f, f.open())
		})
	}
}
