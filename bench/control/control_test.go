package control

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestSetRoundTrip(t *testing.T) {
	in := Set{ID: 42, Name: "bench/svc-00001/http", Endpoints: []Endpoint{
		{Addr: netip.MustParseAddr("198.18.0.1"), Port: 8080},
		{Addr: netip.MustParseAddr("198.19.255.254"), Port: 65535},
	}}
	line := string(AppendSet(nil, in))
	if !strings.HasSuffix(line, "\n") {
		t.Fatalf("line %q has no newline", line)
	}
	cmd, args, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if cmd != CmdSet {
		t.Fatalf("command %q", cmd)
	}
	out, err := ParseSet(args)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || out.Name != in.Name || len(out.Endpoints) != 2 || out.Endpoints[1] != in.Endpoints[1] {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	cla := BuildCLA(out)
	if err := cla.Validate(); err != nil {
		t.Fatalf("CLA invalid: %v", err)
	}
	if !proto.Equal(cla, BuildCLA(in)) {
		t.Fatal("equal sets built different CLAs")
	}
	if id, ok := ChangeID(cla); !ok || id != 42 {
		t.Fatalf("ChangeID = %d, %v", id, ok)
	}
}

func TestParseSetErrors(t *testing.T) {
	for _, bad := range []string{"", "x name 1.2.3.4:1", "1", "1  ", "1 n 1.2.3.4", "1 n 1.2.3.4:1,"} {
		if _, err := ParseSet(bad); err == nil {
			t.Errorf("ParseSet(%q) succeeded", bad)
		}
	}
	if s, err := ParseSet("3 empty"); err != nil || len(s.Endpoints) != 0 {
		t.Errorf("a CLA without endpoints: %+v, %v", s, err)
	}
}

func TestSliceRoundTrip(t *testing.T) {
	for _, in := range []Slice{
		{ID: 7, Name: "bench/rolling/http", Slice: "rolling-3", Endpoints: []Endpoint{
			{Addr: netip.MustParseAddr("198.18.0.1"), Port: 8080}, {Addr: netip.MustParseAddr("198.18.0.2"), Port: 8080}}},
		{ID: 8, Name: "bench/rolling/http", Slice: "rolling-3"}, // deleted
	} {
		line := string(AppendSlice(nil, in))
		cmd, args, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if cmd != CmdSlice || !strings.HasSuffix(line, "\n") {
			t.Fatalf("line %q", line)
		}
		out, err := ParseSlice(args)
		if err != nil {
			t.Fatal(err)
		}
		if out.ID != in.ID || out.Name != in.Name || out.Slice != in.Slice || !slices.Equal(out.Endpoints, in.Endpoints) {
			t.Fatalf("round trip: %+v, want %+v", out, in)
		}
	}
}

func TestParseSliceErrors(t *testing.T) {
	for _, bad := range []string{"", "1", "1 n", "x n s 1.2.3.4:1", "1  s 1.2.3.4:1", "1 n  1.2.3.4:1", "1 n s 1.2.3.4", "1 n s 1.2.3.4:1,"} {
		if _, err := ParseSlice(bad); err == nil {
			t.Errorf("ParseSlice(%q) succeeded", bad)
		}
	}
}

// A print ignores order, sees every endpoint, and reads the same off the
// CLA a set builds: the parent attributes translated CLAs with it.
func TestPrint(t *testing.T) {
	eps := []Endpoint{
		{Addr: netip.MustParseAddr("198.18.0.1"), Port: 8080},
		{Addr: netip.MustParseAddr("198.18.0.2"), Port: 8080},
		{Addr: netip.MustParseAddr("2001:db8::1"), Port: 8080},
	}
	p := EndpointsPrint(eps)
	if q := EndpointsPrint([]Endpoint{eps[2], eps[0], eps[1]}); q != p {
		t.Errorf("order changed the print: %x, %x", p, q)
	}
	for i, other := range [][]Endpoint{
		eps[:2],
		{eps[0], eps[1], {Addr: eps[2].Addr, Port: 8081}},
		{eps[0], eps[1], {Addr: netip.MustParseAddr("2001:db8::2"), Port: 8080}},
		{eps[0], eps[1], eps[1]},
	} {
		if EndpointsPrint(other) == p {
			t.Errorf("set %d has the same print as a different set", i)
		}
	}
	got, ok := CLAPrint(BuildCLA(Set{ID: 1, Name: "n", Endpoints: eps}))
	if !ok || got != p {
		t.Errorf("CLAPrint = %x, %v; want %x", got, ok, p)
	}
	bad := BuildCLA(Set{ID: 1, Name: "n", Endpoints: eps[:1]})
	bad.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "not-an-ip"
	if _, ok := CLAPrint(bad); ok {
		t.Error("CLAPrint accepted an address that is not an IP")
	}
}
