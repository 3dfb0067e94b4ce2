package envoysim

import (
	"fmt"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// handle checks, applies and queues the ACK or NACK of one response. It runs
// on the run goroutine. The lock is taken twice, not held throughout, so that
// decoding and the user's NACK hook never run under it.
func (c *Client) handle(st *stream, resp *discoveryv3.DeltaDiscoveryResponse, at time.Time) {
	nonce := resp.GetNonce()
	size := proto.Size(resp)

	c.mu.Lock()
	st.responded = true
	c.stats.Responses++
	c.stats.Resources += uint64(len(resp.GetResources()))
	c.stats.Removals += uint64(len(resp.GetRemovedResources()))
	c.stats.Bytes += uint64(size)
	if len(st.acks) > 0 {
		c.stats.Pipelined++
	}
	if nonce == "" {
		c.violateLocked(st, EmptyNonce, nonce, at, "response has no nonce, so it cannot be ACKed")
	} else if _, seen := st.nonces[nonce]; seen {
		c.violateLocked(st, ReusedNonce, nonce, at, "nonce was already used by an earlier response on this stream")
	} else {
		st.nonces[nonce] = struct{}{}
	}
	if got := resp.GetTypeUrl(); got != c.cfg.TypeURL {
		// Envoy drops a response for a type it has no subscription for,
		// without ACK or NACK; so does the simulator, after recording it.
		c.violateLocked(st, UnrequestedType, nonce, at,
			fmt.Sprintf("response for type %q; the client subscribed only to %q", got, c.cfg.TypeURL))
		c.notifyLocked()
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	items, rej := decodeResponse(c.cfg.DecodeCache, c.cfg.TypeURL, resp)
	reason := ""
	if rej != nil {
		reason = rej.detail
	} else if c.cfg.NACK != nil {
		if err := c.cfg.NACK(resp); err != nil {
			reason = err.Error()
			if reason == "" {
				reason = "rejected"
			}
		}
	}
	// A resource the client rejects while applying stops the application
	// there: those before it are routed with (see routeLocked).
	applyN := len(items)
	if reason == "" && c.cfg.Reject != nil {
		for i, it := range items {
			if err := c.cfg.Reject(it.name, it.res.msg); err != nil {
				applyN = i
				reason = fmt.Sprintf("%s: %s", it.name, err.Error())
				break
			}
		}
	}
	report := c.cfg.OnApply != nil && reason == ""
	var applied Applied

	c.mu.Lock()
	if rej != nil {
		c.violateLocked(st, rej.kind, nonce, at, rej.detail)
	}
	if !c.cfg.Wildcard {
		for _, r := range resp.GetResources() {
			if n := r.GetName(); n != "" && !st.knowsLocked(n) {
				c.violateLocked(st, UnsubscribedName, nonce, at,
					fmt.Sprintf("resource %q was never subscribed on this stream", n))
			}
		}
	}
	// One entry per resource, shared by the routes and the xDS state
	// (entries are replaced, never changed), and one receive time shared by
	// the response's entries: a fleet keeps millions of them.
	received := &at
	for i := range items {
		items[i].e = &entry{version: items[i].version, res: items[i].res, at: received}
	}
	if rej == nil && (reason == "" || applyN < len(items)) {
		c.routeLocked(items[:applyN])
	}
	if reason == "" {
		if report {
			applied = Applied{Nonce: nonce, ReceivedAt: at}
		}
		// The xDS state records the response only once every resource was
		// applied (DeltaSubscriptionState::handleGoodResponse calls
		// addResourceStateFromServer after the callbacks return).
		for _, it := range items {
			if !c.wantsLocked(it.name) {
				continue
			}
			c.held[it.name] = it.e
			delete(c.removed, it.name)
			if report {
				applied.Updated = append(applied.Updated, NameVersion{Name: it.name, Version: it.version})
			}
		}
		for _, n := range resp.GetRemovedResources() {
			// A removal of a name the client does not want needs no
			// action: the server may have sent it before reading the
			// unsubscribe, and Envoy ignores it.
			if n == "" || !c.wantsLocked(n) {
				continue
			}
			// The xDS state forgets the name, so it is not declared on
			// reconnect, but routes is left alone: EdsClusterImpl::
			// onConfigUpdate (source/extensions/clusters/eds/eds.cc)
			// ignores removed_resources, and a response that adds nothing
			// only counts update_empty and keeps the cluster's hosts.
			delete(c.held, n)
			c.removed[n] = at
			if report {
				applied.Removed = append(applied.Removed, n)
			}
		}
	}
	st.acks = append(st.acks, ack{nonce: nonce, reason: reason})
	st.wakeWriter()
	if report {
		// Waiters are woken only once OnApply has returned (below), and WaitFor does not look
		// at the state meanwhile: whoever sees this response in a WaitFor also sees what
		// OnApply did with it.
		c.applying = true
	} else {
		c.notifyLocked()
	}
	c.mu.Unlock()

	if reason != "" {
		c.log.Warn("NACKing response", zap.Uint64("stream", st.id), zap.String("nonce", nonce), zap.String("reason", reason))
	} else if ce := c.log.Check(zap.DebugLevel, "applied response"); ce != nil {
		ce.Write(zap.Uint64("stream", st.id), zap.String("nonce", nonce),
			zap.Int("resources", len(resp.GetResources())), zap.Int("removed", len(resp.GetRemovedResources())))
	}
	if report {
		c.cfg.OnApply(applied)
		c.mu.Lock()
		c.applying = false
		c.notifyLocked()
		c.mu.Unlock()
	}
}

// routeLocked applies a validated response's resources to what the client
// routes with, as WatchMap::onConfigUpdate (source/common/config/
// watch_map.cc) delivers a decoded delta response to its watches, one EDS
// cluster each: the first cluster that throws stops the delivery, and the
// clusters delivered before it keep what they applied. Envoy's order is that
// of a hash map of watches, so no order can be relied on; the client applies
// in response order and Config.Reject picks the resource that fails, so a
// test can put the failure anywhere. items are those delivered before the
// failure, or all of them. Callers hold c.mu.
func (c *Client) routeLocked(items []item) {
	for _, it := range items {
		if !c.wantsLocked(it.name) {
			continue // WatchMap::onConfigUpdate skips resources no watch asked for.
		}
		// EdsClusterImpl::onConfigUpdate: a ClusterLoadAssignment replaces
		// the cluster's hosts, and one with no endpoints empties it.
		c.routes[it.name] = it.e
	}
}

// wantsLocked reports whether the client applies news about name.
func (c *Client) wantsLocked(name string) bool {
	if c.cfg.Wildcard {
		return true
	}
	_, ok := c.want[name]
	return ok
}

// knowsLocked reports whether the server could legitimately send name on st:
// it was told the client wants it, or told so and then told otherwise (in
// which case the response may have crossed the unsubscribe).
func (st *stream) knowsLocked(name string) bool {
	if _, ok := st.told[name]; ok {
		return true
	}
	_, ok := st.unsubscribed[name]
	return ok
}

// violateLocked records a violation. Callers hold c.mu.
func (c *Client) violateLocked(st *stream, kind ViolationKind, nonce string, at time.Time, detail string) {
	v := Violation{Kind: kind, Detail: detail, Nonce: nonce, Stream: st.id, At: at}
	c.violations = append(c.violations, v)
	c.log.Warn("server protocol violation", zap.Uint64("stream", st.id), zap.String("nonce", nonce),
		zap.Stringer("kind", kind), zap.String("detail", detail))
}

// rejection is why a response is NACKed for its content.
type rejection struct {
	kind   ViolationKind
	detail string
}

// item is one decoded resource of an acceptable response.
type item struct {
	name, version string
	res           *decoded
	e             *entry // set by handle, once the response is accepted for application
}

// decodeResponse decodes and validates every resource of resp, or says why
// the whole response must be rejected. It reads nothing but resp, so it runs
// without the client's lock.
func decodeResponse(dc *DecodeCache, typeURL string, resp *discoveryv3.DeltaDiscoveryResponse) ([]item, *rejection) {
	res := resp.GetResources()
	names := make(map[string]struct{}, len(res))
	for i, r := range res {
		n := r.GetName()
		switch _, dup := names[n]; {
		case n == "":
			return nil, &rejection{InvalidResource, fmt.Sprintf("resource #%d has no name", i)}
		case dup:
			return nil, &rejection{DuplicateName, fmt.Sprintf("resource %q appears more than once", n)}
		case r.GetVersion() == "":
			return nil, &rejection{MissingVersion, fmt.Sprintf("resource %q has no version", n)}
		}
		names[n] = struct{}{}
	}
	for _, n := range resp.GetRemovedResources() {
		if _, both := names[n]; both {
			return nil, &rejection{UpdatedAndRemoved, fmt.Sprintf("resource %q is both updated and removed", n)}
		}
	}

	items := make([]item, 0, len(res))
	for _, r := range res {
		n, v := r.GetName(), r.GetVersion()
		d, err := decodeAny(dc, typeURL, n, v, r.GetResource())
		if err != nil {
			return nil, &rejection{InvalidResource, fmt.Sprintf("resource %q: %v", n, err)}
		}
		if cla := d.cla(); cla != nil && cla.GetClusterName() != n {
			return nil, &rejection{InvalidResource,
				fmt.Sprintf("resource %q carries cluster_name %q", n, cla.GetClusterName())}
		}
		items = append(items, item{name: intern(n, d.name), version: intern(v, d.version), res: d})
	}
	return items, nil
}
