package control

import (
	"net/netip"
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
