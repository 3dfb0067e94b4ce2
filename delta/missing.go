package delta

import (
	"sort"

	"go.uber.org/zap"

	"github.com/deltaeds/deltaeds/xds"
)

// A name a client subscribes to by name that has no resource is served the
// store's stand-in (an empty CLA): Envoy accepts it and routes the cluster to
// nothing, silently. So the first time a stream names such a name, the stream
// logs it, with the published names closest to it (xds.Store.Suggest), which
// turns a typo like shop/web/https into "did you mean shop/web/http".

// maxMissingLogged bounds the missing names a stream logs and remembers: a
// hostile client could otherwise subscribe to 100k missing names and grow
// both without end. Past it, one line says logging stopped.
const maxMissingLogged = 100

// maxSuggestions is the number of close names a missing-name line suggests.
const maxSuggestions = 3

// missingKey is what a stream remembers of a missing name it logged.
type missingKey struct{ typeURL, name string }

// noteMissing logs, once per stream, type and name, the names of a
// subscription change that have no resource. Before the store is synced
// nothing is known to be missing: the check waits for the sync
// (checkMissingOnSync).
func (st *stream) noteMissing(ts *typeState, subscribed []string) {
	if st.missingFull || len(subscribed) == 0 {
		return
	}
	if !st.server.store.Synced() {
		st.missingOnSync = true
		return
	}
	candidates := subscribed
	if len(st.missingLogged) > 0 {
		candidates = make([]string, 0, len(subscribed))
		for _, n := range subscribed {
			if _, logged := st.missingLogged[missingKey{ts.url, n}]; !logged {
				candidates = append(candidates, n)
			}
		}
	}
	// One more than there is room for, to say that logging stops.
	st.logMissing(ts.url, st.server.store.Absent(ts.url, candidates, maxMissingLogged-len(st.missingLogged)+1))
}

// checkMissingOnSync logs the missing names of subscriptions made before the
// store was synced, once it is.
func (st *stream) checkMissingOnSync() {
	if !st.missingOnSync || !st.server.store.Synced() {
		return
	}
	st.missingOnSync = false
	for _, ts := range st.order {
		if st.missingFull {
			return
		}
		st.logMissing(ts.url, ts.sub.MissingNames(maxMissingLogged-len(st.missingLogged)+1))
	}
}

// logMissing logs each missing name not logged yet on this stream, until the
// stream's bound, then one line saying logging stops.
func (st *stream) logMissing(typeURL string, missing []string) {
	for _, name := range missing {
		if st.missingFull {
			return
		}
		key := missingKey{typeURL, name}
		if _, logged := st.missingLogged[key]; logged {
			continue
		}
		if len(st.missingLogged) >= maxMissingLogged {
			st.missingFull = true
			st.missingLogged = nil // never consulted again
			st.log.Warn("this stream subscribes to more names that do not exist; no longer logging them on this stream (see /debug/missing)",
				zap.String("type_url", typeURL), zap.Int("logged", maxMissingLogged))
			return
		}
		if st.missingLogged == nil {
			st.missingLogged = make(map[missingKey]struct{})
		}
		st.missingLogged[key] = struct{}{}
		suggestions := st.server.store.Suggest(typeURL, name, maxSuggestions)
		if suggestions == nil {
			suggestions = []string{}
		}
		st.log.Warn("client subscribed to a name that does not exist; it is served empty (no endpoints) until it appears: a typo, or a deleted Service?",
			zap.String("type_url", typeURL), zap.String("name", truncate(name, 256)), zap.Strings("suggestions", suggestions))
	}
}

// MissingName is one name that streams subscribe to by name and that has no
// resource, for debugging.
type MissingName struct {
	Name string `json:"name"`
	// NodeIDs are the node ids of the streams subscribed to it, sorted; a
	// node with several such streams appears once per stream.
	NodeIDs []string `json:"node_ids"`
}

// Missing returns every name of a type that a connected stream subscribes to
// by name and that has no resource, sorted by name, with the node ids of the
// streams asking for it. It is meant for debug endpoints.
func (s *Server) Missing(typeURL string) []MissingName {
	missing := s.store.Missing(typeURL)
	out := make([]MissingName, 0, len(missing))
	if len(missing) == 0 {
		return out
	}
	s.mu.Lock()
	list := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		list = append(list, st)
	}
	s.mu.Unlock()
	nodeOf := make(map[*xds.Subscription]string)
	for _, st := range list {
		st.infoMu.Lock()
		for _, sub := range st.infoSubs {
			nodeOf[sub] = st.infoData.NodeID
		}
		st.infoMu.Unlock()
	}
	for _, m := range missing {
		ids := make([]string, 0, len(m.Subscriptions))
		for _, sub := range m.Subscriptions {
			if id, ok := nodeOf[sub]; ok {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		out = append(out, MissingName{Name: m.Name, NodeIDs: ids})
	}
	return out
}
