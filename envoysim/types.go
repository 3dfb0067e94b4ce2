package envoysim

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TypeURLClusterLoadAssignment is the type URL of EDS resources, the default
// [Config.TypeURL].
const TypeURLClusterLoadAssignment = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

// Config says where a [Client] connects, who it claims to be and how it
// reacts. Only NodeID and one of Target or Conn are required.
type Config struct {
	// Target is the server's address, host:port. It is dialled when Conn is
	// nil, with Creds and DialOptions.
	Target string
	// Creds secures the connection dialled to Target; nil means plaintext.
	// For mTLS pass credentials.NewTLS with a client certificate.
	Creds credentials.TransportCredentials
	// DialOptions are appended after the client's own defaults (short
	// connection backoff) when dialling Target, so they take precedence.
	DialOptions []grpc.DialOption
	// Conn, if set, is used instead of dialling Target. The client does not
	// close it: the caller owns it and may share it between clients.
	Conn *grpc.ClientConn

	// NodeID and Cluster identify the simulated Envoy (node.id and
	// node.cluster); Locality is node.locality and may be nil.
	NodeID   string
	Cluster  string
	Locality *corev3.Locality
	// Metadata is node.metadata (nil: none), as a bootstrap's node.metadata
	// (deltaeds bootstrap --node-name, or Envoy's --config-yaml, writes the
	// Kubernetes node name there). Envoy puts the whole bootstrap node,
	// metadata included, in its requests (DeltaSubscriptionState::
	// getNextRequestAckless, source/extensions/config_subscription/grpc/
	// delta_subscription_state.cc: request.mutable_node()->MergeFrom(
	// local_info_.node())); the client sends it on each stream's first
	// request, as the bootstraps deltaeds writes ask with
	// set_node_on_first_message_only.
	Metadata *structpb.Struct

	// TypeURL is the one type the client subscribes to. Empty means
	// [TypeURLClusterLoadAssignment]; other types are decoded generically
	// and Held.CLA is then nil.
	TypeURL string
	// Wildcard subscribes to "*" in addition to any names. Envoy never does
	// this for EDS; it exists for tests of the server's wildcard support.
	Wildcard bool

	// NACK, if set, is asked about every response that passed the client's
	// own checks: returning an error NACKs the response with the error's text
	// as error_detail before any of it is applied (Envoy's decode and
	// validation phase), returning nil lets it be applied. It runs on the
	// receive goroutine, without locks held, and must not block for long.
	NACK func(*discoveryv3.DeltaDiscoveryResponse) error
	// Reject, if set, is asked about each resource of a response as it is
	// applied, in the order Envoy delivers them (see [Client] "Partial
	// NACKs"): returning an error stops the application there and NACKs the
	// response. Resources applied before it stay applied to what the client
	// routes to; no version of the response is recorded. It runs like NACK.
	Reject func(name string, resource proto.Message) error
	// OnApply, if set, is called after each accepted response has been
	// applied, and before any WaitFor sees the response: whoever waited for
	// it finds what OnApply did. It runs on the receive goroutine, so a slow
	// OnApply is a slow Envoy: the client stops reading until it returns.
	OnApply func(Applied)

	// DecodeCache, if set, is shared with other clients so that those that
	// receive the same bytes for a resource hold one decoded message (see
	// [DecodeCache]); nil means the client decodes everything for itself.
	// Either way it behaves the same.
	DecodeCache *DecodeCache

	// Logger receives the client's logs; nil means none.
	Logger *zap.Logger
	// Backoff and MaxBackoff shape the delay before a new stream is opened
	// after one ends, as Envoy's JitteredExponentialBackOffStrategy does:
	// the n-th retry waits a uniformly random time in [0, min(Backoff*2^n,
	// MaxBackoff)), and the sequence restarts once a stream has delivered a
	// response. The defaults are Envoy's (500ms and 30s); tests may pass
	// shorter ones, but figures quoted as recovery times use the defaults.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// ConnectTimeout is the xDS cluster's connect_timeout (Envoy's default,
	// 5s, when zero). As in Envoy it bounds establishing the connection
	// (TCP, then the TLS handshake when Creds has one), never the HTTP/2
	// preface or the stream: see [Client.dial].
	ConnectTimeout time.Duration
}

// Held is one resource as the client's xDS state holds it: what the server
// last said about the name, and what the client declares in
// initial_resource_versions on reconnect. A removal drops it. What Envoy
// routes to is a different view: see [Route].
type Held struct {
	// Version is the version the server gave with the resource.
	Version string
	// CLA is the resource when the type is ClusterLoadAssignment, else nil.
	// It is shared, not copied (with a [DecodeCache], with other clients
	// too): treat it as read-only.
	CLA *endpointv3.ClusterLoadAssignment
	// Resource is the decoded resource whatever its type (the same pointer
	// as CLA for EDS). Read-only too.
	Resource proto.Message
	// ReceivedAt is when the response carrying this version was received.
	ReceivedAt time.Time
}

// Route is what Envoy's EDS cluster for a name routes with: the last
// resource it applied. A removal does not change it (Envoy ignores EDS
// removals); only a resource with no endpoints empties it, and it goes away
// only when the client unsubscribes (the cluster is removed).
type Route struct {
	// Version is the version the resource came with. It may differ from
	// what the client declares on reconnect (its Held version): a resource
	// applied from a response that was then NACKed is routed with but its
	// version is not recorded.
	Version string
	// CLA is the resource when the type is ClusterLoadAssignment, else nil.
	// Shared, read-only.
	CLA *endpointv3.ClusterLoadAssignment
	// Resource is the decoded resource whatever its type. Read-only.
	Resource proto.Message
	// ReceivedAt is when the response carrying it was received.
	ReceivedAt time.Time
}

// entry is what the client keeps per name in its xDS state and its routes,
// from which Held and Route values are built when read. A fleet keeps
// millions of them (issue 14), so it is small: the message once rather than
// as both CLA and Resource, the receive time by reference, one per response,
// and one entry for both views of a resource while they agree (an entry is
// never changed, only replaced), the maps holding only pointers.
type entry struct {
	version string
	res     *decoded
	at      *time.Time
}

func (e *entry) held() Held {
	return Held{Version: e.version, CLA: e.res.cla(), Resource: e.res.msg, ReceivedAt: *e.at}
}

func (e *entry) route() Route {
	return Route{Version: e.version, CLA: e.res.cla(), Resource: e.res.msg, ReceivedAt: *e.at}
}

// NameVersion is one resource version delivered in a response.
type NameVersion struct {
	Name    string
	Version string
}

// Applied describes one accepted response, for [Config.OnApply]. Updated
// and Removed list only names the client wanted (and therefore applied).
type Applied struct {
	Nonce      string
	ReceivedAt time.Time
	Updated    []NameVersion
	Removed    []string
}

// ViolationKind classifies a [Violation].
type ViolationKind int

// The kinds of protocol violation the client detects.
const (
	// EmptyNonce: a response without a nonce, which cannot be ACKed.
	EmptyNonce ViolationKind = iota + 1
	// ReusedNonce: a nonce already used by an earlier response on the same
	// stream, which makes the ACK ambiguous.
	ReusedNonce
	// UnrequestedType: a response for a type URL the client never
	// subscribed to. Like Envoy, the client drops it without ACK.
	UnrequestedType
	// UnsubscribedName: a resource for a name the client never told this
	// stream it wants, when not wildcard. Not raised for names unsubscribed
	// on this stream, since the response may have been in flight when the
	// server read the unsubscribe. The resource is not applied.
	UnsubscribedName
	// MissingVersion: a resource without a version, which the client could
	// never present in initial_resource_versions. The response is NACKed.
	MissingVersion
	// DuplicateName: a response naming the same resource twice. NACKed.
	DuplicateName
	// UpdatedAndRemoved: a response naming a resource both in resources
	// and removed_resources. NACKed.
	UpdatedAndRemoved
	// InvalidResource: a resource without a name, whose Any is missing, of
	// another type or undecodable, that fails Validate, or a CLA whose
	// cluster_name differs from the resource name (Envoy rejects that too).
	// NACKed.
	InvalidResource
)

var violationKindNames = map[ViolationKind]string{
	EmptyNonce:        "empty nonce",
	ReusedNonce:       "reused nonce",
	UnrequestedType:   "unrequested type",
	UnsubscribedName:  "unsubscribed name",
	MissingVersion:    "missing version",
	DuplicateName:     "duplicate name",
	UpdatedAndRemoved: "updated and removed",
	InvalidResource:   "invalid resource",
}

func (k ViolationKind) String() string {
	if s, ok := violationKindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("ViolationKind(%d)", int(k))
}

// Violation is one protocol violation by the server, as seen by the client.
type Violation struct {
	Kind ViolationKind
	// Detail says what exactly was wrong, naming the resource if any.
	Detail string
	// Nonce is the nonce of the offending response.
	Nonce string
	// Stream counts the client's streams from 1, so a test can tell which
	// connection the violation happened on.
	Stream uint64
	At     time.Time
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: %s (stream %d, nonce %q, at %s)",
		v.Kind, v.Detail, v.Stream, v.Nonce, v.At.Format(time.RFC3339Nano))
}

// Stats counts what the client has seen and sent since it was created.
type Stats struct {
	// Responses is every response received, whatever became of it.
	Responses uint64
	// Pipelined counts responses received while the ACK of an earlier one
	// was still queued: legal, and a sign the server does not wait for ACKs.
	Pipelined uint64
	// Resources and Removals count the entries of resources and
	// removed_resources in all responses received.
	Resources uint64
	Removals  uint64
	// Bytes is the sum of proto.Size of all responses received.
	Bytes uint64
	// Requests is every request sent; ACKs and NACKs count those that
	// carried a response_nonce without and with error_detail.
	Requests uint64
	ACKs     uint64
	NACKs    uint64
	// Streams counts streams opened; Reconnects is Streams less the first.
	Streams    uint64
	Reconnects uint64
	// Violations lists every protocol violation in the order seen.
	Violations []Violation
}

// State is a read-only view of a client's state handed to a [Client.WaitFor]
// predicate. It is valid only during that call, which holds the client's
// lock: the predicate must not keep it or call methods of the [Client].
type State struct {
	c *Client
}

// Held returns what the client's xDS state holds for name (the server's
// view; see [Held]).
func (s State) Held(name string) (Held, bool) {
	e, ok := s.c.held[name]
	if !ok {
		return Held{}, false
	}
	return e.held(), true
}

// Route returns what the client routes with for name (Envoy's view; see
// [Route]).
func (s State) Route(name string) (Route, bool) {
	e, ok := s.c.routes[name]
	if !ok {
		return Route{}, false
	}
	return e.route(), true
}

// Removed reports whether the latest news about a wanted name was a removal.
func (s State) Removed(name string) bool {
	_, ok := s.c.removed[name]
	return ok
}

// HeldLen is the number of resources held.
func (s State) HeldLen() int { return len(s.c.held) }

// RangeHeld calls f for each held resource, in no particular order, until f
// returns false.
func (s State) RangeHeld(f func(name string, h Held) bool) {
	for n, e := range s.c.held {
		if !f(n, e.held()) {
			return
		}
	}
}

// RouteLen is the number of names the client routes with.
func (s State) RouteLen() int { return len(s.c.routes) }

// RangeRoutes calls f for each name the client routes with, in no
// particular order, until f returns false.
func (s State) RangeRoutes(f func(name string, r Route) bool) {
	for n, e := range s.c.routes {
		if !f(n, e.route()) {
			return
		}
	}
}

// Stats returns a copy of the client's counters and violations.
func (s State) Stats() Stats { return s.c.statsLocked() }
