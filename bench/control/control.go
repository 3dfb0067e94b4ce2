package control

import (
	"errors"
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
	b = append(b, CmdSet...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, s.ID, 10)
	b = append(b, ' ')
	b = append(b, s.Name...)
	b = append(b, ' ')
	for i, e := range s.Endpoints {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.Addr.AppendTo(b)
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(e.Port), 10)
	}
	return append(b, '\n')
}

// ParseSet parses the arguments of a set command (the line without "set ").
func ParseSet(args string) (Set, error) {
	idStr, rest, ok := strings.Cut(args, " ")
	if !ok {
		return Set{}, errors.New("set: want <id> <name> <endpoints>")
	}
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil {
		return Set{}, fmt.Errorf("set: change id: %w", err)
	}
	name, eps, _ := strings.Cut(rest, " ")
	if name == "" {
		return Set{}, errors.New("set: empty name")
	}
	s := Set{ID: id, Name: name}
	if eps == "" {
		return s, nil
	}
	s.Endpoints = make([]Endpoint, 0, strings.Count(eps, ",")+1)
	for ep := range strings.SplitSeq(eps, ",") {
		ap, err := netip.ParseAddrPort(ep)
		if err != nil {
			return Set{}, fmt.Errorf("set %s: endpoint: %w", name, err)
		}
		s.Endpoints = append(s.Endpoints, Endpoint{Addr: ap.Addr(), Port: uint32(ap.Port())})
	}
	return s, nil
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
