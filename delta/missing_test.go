package delta

import (
	"fmt"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const missingMessage = "client subscribed to a name that does not exist; it is served empty (no endpoints) until it appears: a typo, or a deleted Service?"

// missingLine is one "name does not exist" log line, by its stable keys.
type missingLine struct {
	NodeID, TypeURL, Name string
	Suggestions           []string
}

func missingLines(logs *observer.ObservedLogs) []missingLine {
	var out []missingLine
	for _, e := range logs.FilterMessage(missingMessage).All() {
		m := e.ContextMap()
		l := missingLine{NodeID: fmt.Sprint(m["node_id"]), TypeURL: fmt.Sprint(m["type_url"]), Name: fmt.Sprint(m["name"])}
		for _, s := range m["suggestions"].([]any) {
			l.Suggestions = append(l.Suggestions, s.(string))
		}
		out = append(out, l)
	}
	return out
}

// openAs opens a stream whose first request names node and subscribes to
// names, and reads its first response.
func openAs(f *fixture, node string, names ...string) *rawStream {
	f.t.Helper()
	rs := f.open()
	rs.send(&req{Node: &corev3.Node{Id: node}, ResourceNamesSubscribe: names})
	rs.ack(rs.next())
	return rs
}

// TestMissingNamesAreLogged: a stream subscribing to a name that does not
// exist logs it once per stream and name, with the closest published names
// of its namespace; names that exist, the wildcard, and a name subscribed
// again are not logged.
func TestMissingNamesAreLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := newFixture(t, Config{Logger: zap.New(core)})
	f.set(1, "shop/web/http", "shop/api/http", "shop/cart", "other/web/https")
	f.store.MarkSynced()

	rs := openAs(f, "envoy-1", "shop/web/https", "shop/web/http", "nowhere/x")
	rs.send(&req{ResourceNamesSubscribe: []string{"shop/web/https", "*"}}) // again: not logged again
	rs.ack(rs.next())
	rs.quiet()
	openAs(f, "envoy-2", "shop/web/https").quiet()

	probe := func(node string) missingLine {
		return missingLine{NodeID: node, TypeURL: EndpointType, Name: "probe-1", Suggestions: nil}
	}
	want := []missingLine{
		{"envoy-1", EndpointType, "shop/web/https", []string{"shop/web/http", "shop/api/http"}},
		{"envoy-1", EndpointType, "nowhere/x", nil},
		probe("envoy-1"),
		{"envoy-2", EndpointType, "shop/web/https", []string{"shop/web/http", "shop/api/http"}},
		probe("envoy-2"),
	}
	if got := missingLines(logs); !reflect.DeepEqual(got, want) {
		t.Errorf("logged\n%+v\nwant\n%+v", got, want)
	}
	for _, e := range logs.FilterMessage(missingMessage).All() {
		if e.Level != zapcore.WarnLevel {
			t.Errorf("logged at %v", e.Level)
		}
	}
}

// TestMissingNamesBeforeSync: names subscribed before the store is synced
// are not known to be missing then; they are logged once it is.
func TestMissingNamesBeforeSync(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := newFixture(t, Config{Logger: zap.New(core)})
	rs := f.open()
	rs.first(&req{ResourceNamesSubscribe: []string{"shop/web/http", "shop/web/https"}})
	waitFor(t, func() bool { s := f.server.Streams(); return len(s) == 1 && s[0].Subscriptions == 2 })
	if got := missingLines(logs); len(got) != 0 {
		t.Fatalf("logged before sync: %+v", got)
	}
	f.set(1, "shop/web/http")
	f.store.MarkSynced()
	rs.next()
	waitFor(t, func() bool { return len(missingLines(logs)) == 1 })
	want := []missingLine{{"node-1", EndpointType, "shop/web/https", []string{"shop/web/http"}}}
	if got := missingLines(logs); !reflect.DeepEqual(got, want) {
		t.Errorf("logged %+v, want %+v", got, want)
	}
}

// TestMissingNamesLoggedBounded: a client naming many missing names gets
// maxMissingLogged of them logged, then one line saying logging stopped, and
// the stream forgets them.
func TestMissingNamesLoggedBounded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := newFixture(t, Config{Logger: zap.New(core)})
	f.store.MarkSynced()
	var names []string
	for i := range 3 * maxMissingLogged {
		names = append(names, fmt.Sprintf("ns/missing-%d", i))
	}
	rs := openAs(f, "hostile", names[:maxMissingLogged/2]...)
	for i := maxMissingLogged / 2; i < len(names); i += 50 {
		rs.send(&req{ResourceNamesSubscribe: names[i : i+50]})
		rs.ack(rs.next())
	}
	stopped := logs.FilterMessageSnippet("no longer logging them")
	waitFor(t, func() bool { return stopped.Len() == 1 })
	if got := len(missingLines(logs)); got != maxMissingLogged {
		t.Errorf("%d names logged, want %d", got, maxMissingLogged)
	}
	rs.send(&req{ResourceNamesSubscribe: []string{"ns/one-more"}})
	rs.ack(rs.next())
	rs.quiet()
	if got, stops := len(missingLines(logs)), logs.FilterMessageSnippet("no longer logging them").Len(); got != maxMissingLogged || stops != 1 {
		t.Errorf("after the bound: %d names and %d stop lines logged", got, stops)
	}
	f.server.mu.Lock()
	for st := range f.server.streams {
		if st.missingLogged != nil || !st.missingFull {
			t.Errorf("the stream still remembers %d names (full %v)", len(st.missingLogged), st.missingFull)
		}
	}
	f.server.mu.Unlock()
}

// TestServerMissing: the missing names with the node ids of the streams
// asking for them follow subscriptions, resources and streams.
func TestServerMissing(t *testing.T) {
	f := newFixture(t, Config{})
	f.set(1, "shop/web/http")
	f.store.MarkSynced()
	if got := f.server.Missing(EndpointType); got == nil || len(got) != 0 {
		t.Fatalf("Missing = %#v, want an empty list", got)
	}
	b := openAs(f, "envoy-b", "shop/web/https", "shop/web/http", "x/y")
	a := openAs(f, "envoy-a", "shop/web/https")
	openAs(f, "envoy-a", "shop/web/https", "*")
	want := []MissingName{
		{"shop/web/https", []string{"envoy-a", "envoy-a", "envoy-b"}},
		{"x/y", []string{"envoy-b"}},
	}
	if got := f.server.Missing(EndpointType); !reflect.DeepEqual(got, want) {
		t.Errorf("Missing = %+v, want %+v", got, want)
	}

	a.close()
	b.send(&req{ResourceNamesUnsubscribe: []string{"x/y"}})
	b.quiet()
	f.set(1, "x/y")
	// The stream's last request (the probe's unsubscribe) is read
	// asynchronously: wait for the state it leads to.
	want = []MissingName{{"shop/web/https", []string{"envoy-a", "envoy-b"}}}
	waitFor(t, func() bool { return reflect.DeepEqual(f.server.Missing(EndpointType), want) })
	f.set(1, "shop/web/https")
	if got := f.server.Missing(EndpointType); len(got) != 0 || f.store.MissingCount(EndpointType) != 0 {
		t.Errorf("Missing = %+v after the name appeared", got)
	}
	if got := f.server.Missing("type.googleapis.com/other"); len(got) != 0 {
		t.Errorf("Missing of another type = %+v", got)
	}
}
