// Package envoyfleet runs fleets of envoysim clients for the e2e scenarios, the demo and the
// benchmark: one place that names the clients, gives them zones, wires the per-client callbacks
// (OnApply, NACK, Reject) with the client's index, waits for every client at once and sums their
// counters. Its clients share one envoysim.DecodeCache, so that a fleet keeps one decoded copy of
// each resource its clients hold rather than one per client (see envoysim's "Sharing decoded
// resources"): what lets the benchmark run fleets of millions of subscriptions.
//
// It owns only the bookkeeping of many clients; how one client behaves is envoysim's, and what a
// scenario or a benchmark measures with the callbacks is the caller's.
//
// It must never:
//   - be imported by the product binary: it is test infrastructure;
//   - model Envoy itself (envoysim does, citing Envoy's source);
//   - leave a client's goroutines behind once Close returns.
package envoyfleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/envoysim"
)

// Options configures a fleet of simulated Envoys. Size and Target are required.
type Options struct {
	// Size is the number of clients.
	Size int
	// Target is the xDS server's address.
	Target string
	// Creds secures the connections (nil: plaintext).
	Creds credentials.TransportCredentials
	// DialOptions are passed to every client (envoysim.Config.DialOptions).
	DialOptions []grpc.DialOption
	// NodePrefix names the clients "<prefix>-<i>" and is their node.cluster (default "envoy").
	NodePrefix string
	// Zones, if set, gives client i the locality zone Zones[i % len(Zones)].
	Zones []string
	// Subscribe, if set, gives the names client i subscribes to before it starts, so its first
	// request carries them.
	Subscribe func(i int) []string
	// OnApply, if set, is told about every response client i applies, on that client's
	// receive goroutine (see envoysim.Config.OnApply); c is the client.
	OnApply func(i int, c *envoysim.Client, a envoysim.Applied)
	// NACK, if set, decides the ACK or NACK of client i's responses.
	NACK func(i int, resp *discoveryv3.DeltaDiscoveryResponse) error
	// Reject, if set, is asked by client i about each resource as it applies a response
	// (envoysim.Config.Reject): an error stops there and NACKs, the resources before it stay
	// applied, as in Envoy.
	Reject func(i int, name string, resource proto.Message) error
	// Wildcard makes every client subscribe to "*" too (envoysim.Config.Wildcard). Envoy never
	// does this for EDS; a scenario uses it to watch what the server sends wildcard subscribers,
	// such as the removals it sends no client that subscribed by name.
	Wildcard bool
	// Backoff, if set, replaces Envoy's initial reconnect backoff (500ms, doubling to 30s, see
	// envoysim.Config.Backoff). Leave it zero unless the caller has a reason: a scenario that
	// reports how long clients take to recover must use Envoy's.
	Backoff time.Duration
	// Configure, if set, adjusts client i's configuration last, after every option above.
	Configure func(i int, cfg *envoysim.Config)
	// Logger receives the clients' logs (nil: none).
	Logger *zap.Logger
}

// Fleet is a set of running envoysim clients, client i at Clients[i].
type Fleet struct {
	Clients []*envoysim.Client
	// DecodeCache is shared by the clients (unless Options.Configure took it away), for a
	// caller that reports how much they share.
	DecodeCache *envoysim.DecodeCache
}

// Start creates and starts opts.Size clients. They connect in the background; a client sends
// nothing until it subscribes (Options.Subscribe, or Fleet.Subscribe later). On error nothing is
// left running.
func Start(ctx context.Context, opts Options) (*Fleet, error) {
	if opts.NodePrefix == "" {
		opts.NodePrefix = "envoy"
	}
	f := &Fleet{Clients: make([]*envoysim.Client, opts.Size), DecodeCache: new(envoysim.DecodeCache)}
	for i := range opts.Size {
		cfg := envoysim.Config{
			Target:      opts.Target,
			Creds:       opts.Creds,
			DialOptions: opts.DialOptions,
			NodeID:      fmt.Sprintf("%s-%d", opts.NodePrefix, i),
			Cluster:     opts.NodePrefix,
			Wildcard:    opts.Wildcard,
			Backoff:     opts.Backoff,
			Logger:      opts.Logger,
			DecodeCache: f.DecodeCache,
		}
		if len(opts.Zones) > 0 {
			cfg.Locality = &corev3.Locality{Zone: opts.Zones[i%len(opts.Zones)]}
		}
		if on := opts.OnApply; on != nil {
			cfg.OnApply = func(a envoysim.Applied) { on(i, f.Clients[i], a) }
		}
		if nack := opts.NACK; nack != nil {
			cfg.NACK = func(r *discoveryv3.DeltaDiscoveryResponse) error { return nack(i, r) }
		}
		if reject := opts.Reject; reject != nil {
			cfg.Reject = func(name string, m proto.Message) error { return reject(i, name, m) }
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		f.Clients[i] = envoysim.New(cfg)
		if opts.Subscribe != nil {
			f.Clients[i].Subscribe(opts.Subscribe(i)...)
		}
	}
	for i, c := range f.Clients {
		if err := c.Start(ctx); err != nil {
			f.Close()
			return nil, fmt.Errorf("envoyfleet: starting client %d: %w", i, err)
		}
	}
	return f, nil
}

// Subscribe subscribes every client to names.
func (f *Fleet) Subscribe(names ...string) {
	for _, c := range f.Clients {
		c.Subscribe(names...)
	}
}

// WaitAll waits until pred holds for every client, all waiting at once. The error names the
// clients that did not get there.
func (f *Fleet) WaitAll(ctx context.Context, pred func(envoysim.State) bool) error {
	return waitEach(ctx, f.Clients, func(int) func(envoysim.State) bool { return pred })
}

// WaitEach waits until pred(i) holds for client i, for every client, all waiting at once.
func (f *Fleet) WaitEach(ctx context.Context, pred func(i int) func(envoysim.State) bool) error {
	return waitEach(ctx, f.Clients, pred)
}

func waitEach(ctx context.Context, cs []*envoysim.Client, pred func(i int) func(envoysim.State) bool) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, c := range cs {
		p := pred(i)
		wg.Go(func() {
			if err := c.WaitFor(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("client %d: %w", i, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("envoyfleet: %d of %d clients: %w", len(errs), len(cs), errors.Join(errs...))
	}
	return nil
}

// Stats sums the clients' counters (violations concatenated).
func (f *Fleet) Stats() envoysim.Stats {
	var t envoysim.Stats
	for _, c := range f.Clients {
		s := c.Stats()
		t.Responses += s.Responses
		t.Pipelined += s.Pipelined
		t.Resources += s.Resources
		t.Removals += s.Removals
		t.Bytes += s.Bytes
		t.Requests += s.Requests
		t.ACKs += s.ACKs
		t.NACKs += s.NACKs
		t.Streams += s.Streams
		t.Reconnects += s.Reconnects
		t.Violations = append(t.Violations, s.Violations...)
	}
	return t
}

// Violations lists every client's protocol violations, prefixed by the client's index.
func (f *Fleet) Violations() []string {
	var out []string
	for i, c := range f.Clients {
		for _, v := range c.Violations() {
			out = append(out, fmt.Sprintf("client %d: %v", i, v))
		}
	}
	return out
}

// Close stops every client, all at once, and waits for their goroutines.
func (f *Fleet) Close() {
	var wg sync.WaitGroup
	for _, c := range f.Clients {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
}
