package harness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/envoysim"
)

// FleetOptions configures a fleet of simulated Envoys.
type FleetOptions struct {
	// Size is the number of clients.
	Size int
	// Target is deltaeds' xDS address.
	Target string
	// Creds secures the connections (nil: plaintext).
	Creds credentials.TransportCredentials
	// NodePrefix names the clients "<prefix>-<i>" (default "envoy").
	NodePrefix string
	// Zones, if set, gives client i the locality zone Zones[i % len(Zones)].
	Zones []string
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
	// does this for EDS; a scenario uses it to watch what deltaeds sends wildcard subscribers,
	// such as the removals it sends no client that subscribed by name.
	Wildcard bool
	// Backoff, if set, replaces Envoy's initial reconnect backoff (500ms, doubling to 30s, see
	// envoysim.Config.Backoff). Leave it zero unless the scenario has a reason: a scenario that
	// reports how long clients take to recover must use Envoy's.
	Backoff time.Duration
	// Logger receives the clients' logs (nil: none).
	Logger *zap.Logger
}

// Fleet is a set of running envoysim clients.
type Fleet struct {
	Clients []*envoysim.Client
}

// StartFleet creates and starts opts.Size clients. They connect in the background and send
// nothing until they subscribe.
func StartFleet(ctx context.Context, opts FleetOptions) (*Fleet, error) {
	if opts.NodePrefix == "" {
		opts.NodePrefix = "envoy"
	}
	f := &Fleet{}
	for i := range opts.Size {
		cfg := envoysim.Config{
			Target:   opts.Target,
			Creds:    opts.Creds,
			NodeID:   fmt.Sprintf("%s-%d", opts.NodePrefix, i),
			Cluster:  opts.NodePrefix,
			Wildcard: opts.Wildcard,
			Backoff:  opts.Backoff,
			Logger:   opts.Logger,
		}
		if len(opts.Zones) > 0 {
			cfg.Locality = &corev3.Locality{Zone: opts.Zones[i%len(opts.Zones)]}
		}
		var c *envoysim.Client
		if opts.OnApply != nil {
			on := opts.OnApply
			cfg.OnApply = func(a envoysim.Applied) { on(i, c, a) }
		}
		if opts.NACK != nil {
			nack := opts.NACK
			cfg.NACK = func(r *discoveryv3.DeltaDiscoveryResponse) error { return nack(i, r) }
		}
		if opts.Reject != nil {
			reject := opts.Reject
			cfg.Reject = func(name string, m proto.Message) error { return reject(i, name, m) }
		}
		c = envoysim.New(cfg)
		if err := c.Start(ctx); err != nil {
			f.Close()
			return nil, fmt.Errorf("harness: starting client %s: %w", cfg.NodeID, err)
		}
		f.Clients = append(f.Clients, c)
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
	return WaitClients(ctx, f.Clients, pred)
}

// WaitClients waits until pred holds for every client in cs.
func WaitClients(ctx context.Context, cs []*envoysim.Client, pred func(envoysim.State) bool) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.WaitFor(ctx, pred); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("harness: %d of %d clients: %w", len(errs), len(cs), errors.Join(errs...))
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

// Close stops every client and waits for their goroutines.
func (f *Fleet) Close() {
	for _, c := range f.Clients {
		_ = c.Close()
	}
}

// Eventually polls cond every 50ms until it returns nil or ctx ends, and returns the last error.
func Eventually(ctx context.Context, cond func() error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
