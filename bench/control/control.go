package control

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// The commands of the control channel (see the package documentation).
const (
	CmdSet     = "set"
	CmdSlice   = "slice"
	CmdServe   = "serve"
	CmdStats   = "stats"
	CmdProfile = "profile"
	CmdQuit    = "quit"

	ReplyReady = "ready"
	ReplyStats = "stats"
	ReplyOK    = "ok"
)

// The server kinds a child can run.
const (
	KindDeltaEDS = "deltaeds"
	KindLinear   = "linear"
	KindSnapshot = "snapshot"
	KindWire     = "wire"
)

// Kinds lists every server kind, deltaeds first: it is what the others are
// compared to.
var Kinds = []string{KindDeltaEDS, KindLinear, KindSnapshot, KindWire}

// MarkerFilter and MarkerKey locate the change id in a CLA's locality
// metadata: filter_metadata[MarkerFilter].fields[MarkerKey].
const (
	MarkerFilter = "deltaeds.bench"
	MarkerKey    = "change"
)

// ZoneOf returns the zone of an endpoint address in a topology workload of
// zones zones: "zone-K", K its last byte mod zones; "" when zones is 0.
func ZoneOf(addr netip.Addr, zones int) string {
	if zones <= 0 {
		return ""
	}
	b := addr.As16()
	return ZoneName(int(b[15]) % zones)
}

// ZoneName is the name of zone k.
func ZoneName(k int) string { return "zone-" + strconv.Itoa(k) }

// Endpoint is one endpoint address of a CLA.
type Endpoint struct {
	Addr netip.Addr
	Port uint32
}

// Set is one set command: the full new content of one CLA.
type Set struct {
	ID        uint64
	Name      string
	Endpoints []Endpoint
}

// AppendSet appends the set command line for s, newline included, to b.
func AppendSet(b []byte, s Set) []byte {
	return appendCommand(b, CmdSet, s.ID, s.Endpoints, s.Name)
}

// ParseSet parses the arguments of a set command (the line without "set ").
func ParseSet(args string) (Set, error) {
	id, words, eps, err := parseCommand(CmdSet, args, 1)
	if err != nil {
		return Set{}, err
	}
	return Set{ID: id, Name: words[0], Endpoints: eps}, nil
}

// Slice is one slice command: the full new content of one EndpointSlice
// of the Service behind a CLA, as the EndpointSlice controller would write
// it after one pod changed. A slice without endpoints is deleted.
type Slice struct {
	ID uint64
	// Name is the CLA's, which names the Service and port (see
	// translate.ClusterName); Slice is the EndpointSlice's name.
	Name      string
	Slice     string
	Endpoints []Endpoint
}

// AppendSlice appends the slice command line for s, newline included, to b.
func AppendSlice(b []byte, s Slice) []byte {
	return appendCommand(b, CmdSlice, s.ID, s.Endpoints, s.Name, s.Slice)
}

// ParseSlice parses the arguments of a slice command (the line without
// "slice ").
func ParseSlice(args string) (Slice, error) {
	id, words, eps, err := parseCommand(CmdSlice, args, 2)
	if err != nil {
		return Slice{}, err
	}
	return Slice{ID: id, Name: words[0], Slice: words[1], Endpoints: eps}, nil
}

// appendCommand appends "<cmd> <id> <words...> <endpoints>\n" to b.
func appendCommand(b []byte, cmd string, id uint64, eps []Endpoint, words ...string) []byte {
	b = append(b, cmd...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, id, 10)
	for _, w := range words {
		b = append(b, ' ')
		b = append(b, w...)
	}
	b = append(b, ' ')
	return append(appendEndpoints(b, eps), '\n')
}

// parseCommand parses what appendCommand wrote with n words, without the
// command and its space; the endpoints may be absent.
func parseCommand(cmd, args string, n int) (id uint64, words []string, eps []Endpoint, err error) {
	f := strings.SplitN(args, " ", n+2)
	if len(f) < n+1 {
		return 0, nil, nil, fmt.Errorf("%s: want <id>%s <endpoints>", cmd, strings.Repeat(" <name>", n))
	}
	if id, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return 0, nil, nil, fmt.Errorf("%s: change id: %w", cmd, err)
	}
	words = f[1 : n+1]
	for _, w := range words {
		if w == "" {
			return 0, nil, nil, fmt.Errorf("%s: empty name", cmd)
		}
	}
	if len(f) == n+2 {
		if eps, err = parseEndpoints(f[n+1]); err != nil {
			return 0, nil, nil, fmt.Errorf("%s %s: %w", cmd, strings.Join(words, " "), err)
		}
	}
	return id, words, eps, nil
}

func appendEndpoints(b []byte, eps []Endpoint) []byte {
	for i, e := range eps {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.Addr.AppendTo(b)
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(e.Port), 10)
	}
	return b
}

// parseEndpoints parses what appendEndpoints wrote; "" is no endpoint.
func parseEndpoints(eps string) ([]Endpoint, error) {
	if eps == "" {
		return nil, nil
	}
	out := make([]Endpoint, 0, strings.Count(eps, ",")+1)
	for ep := range strings.SplitSeq(eps, ",") {
		ap, err := netip.ParseAddrPort(ep)
		if err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
		out = append(out, Endpoint{Addr: ap.Addr(), Port: uint32(ap.Port())})
	}
	return out, nil
}

// BuildCLA returns the ClusterLoadAssignment a set command describes: one
// locality (no region or zone, as Contour writes them) holding every
// endpoint, marked with the change id.
func BuildCLA(s Set) *endpointv3.ClusterLoadAssignment {
	lbs := make([]*endpointv3.LbEndpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		lbs[i] = &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Protocol:      corev3.SocketAddress_TCP,
					Address:       e.Addr.String(),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: e.Port},
				}}},
			}},
		}
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: s.Name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: lbs,
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				MarkerFilter: {Fields: map[string]*structpb.Value{MarkerKey: structpb.NewNumberValue(float64(s.ID))}},
			}},
		}},
	}
}

// ChangeID reads the change id BuildCLA put into cla.
func ChangeID(cla *endpointv3.ClusterLoadAssignment) (uint64, bool) {
	for _, l := range cla.GetEndpoints() {
		v, ok := l.GetMetadata().GetFilterMetadata()[MarkerFilter].GetFields()[MarkerKey]
		if ok {
			return uint64(v.GetNumberValue()), true
		}
	}
	return 0, false
}

// StopTimeout bounds a child's graceful stop after quit; the parent waits
// that long and a little more before it kills the child. It is long because
// a server closing 10,000 streams of 1,260 names each takes them all out of
// its index first (fleet-curve's last point: over 5 s on a loaded core).
const StopTimeout = 60 * time.Second

// Stats is what a child reports about itself in answer to stats.
type Stats struct {
	// UserSeconds and SystemSeconds are the child's rusage (all threads).
	UserSeconds   float64 `json:"user_s"`
	SystemSeconds float64 `json:"sys_s"`
	// PeakRSSBytes is VmHWM from /proc/self/status; RSSBytes is VmRSS.
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	RSSBytes     uint64 `json:"rss_bytes"`
	HeapBytes    uint64 `json:"heap_bytes"`
	// PeakLiveHeapBytes is the largest live heap (marked by a GC) seen
	// since the child started: the peak without GC headroom.
	PeakLiveHeapBytes uint64 `json:"peak_live_heap_bytes"`
	Goroutines        int    `json:"goroutines"`
	// Applied counts set commands applied since serve.
	Applied uint64 `json:"applied"`
	// VariantBuilds counts per-view variants built (deltaeds in a topology
	// workload); 0 elsewhere.
	VariantBuilds uint64 `json:"variant_builds,omitempty"`
}

// CPUSeconds is user plus system time.
func (s Stats) CPUSeconds() float64 { return s.UserSeconds + s.SystemSeconds }

// EndpointsPrint is a fingerprint of a set of endpoints that ignores their
// order: equal sets have equal prints, and distinct sets (of distinct
// endpoints) differ but for a 64-bit collision. It is a sum, so a parent
// can keep it as endpoints come and go: add EndpointPrint of one, subtract
// it of another.
func EndpointsPrint(eps []Endpoint) uint64 {
	var p uint64
	for _, e := range eps {
		p += EndpointPrint(e)
	}
	return p
}

// EndpointPrint is one endpoint's part of [EndpointsPrint].
func EndpointPrint(e Endpoint) uint64 {
	a := e.Addr.Unmap().As16()
	h := mix64(uint64(e.Port) ^ binary.BigEndian.Uint64(a[:8]))
	return mix64(h ^ binary.BigEndian.Uint64(a[8:]))
}

// mix64 is SplitMix64's finalizer: every input bit moves every output bit.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// CLAPrint is [EndpointsPrint] of every endpoint of cla, in every locality
// and priority. ok is false when an endpoint's address is not an IP:port.
func CLAPrint(cla *endpointv3.ClusterLoadAssignment) (p uint64, ok bool) {
	for _, l := range cla.GetEndpoints() {
		for _, lb := range l.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			a, err := netip.ParseAddr(sa.GetAddress())
			if err != nil {
				return 0, false
			}
			p += EndpointPrint(Endpoint{Addr: a, Port: sa.GetPortValue()})
		}
	}
	return p, true
}
