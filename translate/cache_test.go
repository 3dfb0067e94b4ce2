package translate_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/deltaeds/deltaeds/translate"
)

// checkSameAsService compares what a ServiceCache returned with what
// Service returns for the same input: counts, CLAs and their encodings
// byte for byte, and every Topology's keys and variants for fuzzViews.
func checkSameAsService(t *testing.T, step string, got translate.Result, in []*discoveryv1.EndpointSlice, opts translate.Options) {
	t.Helper()
	want := translate.Service(testNS, testSvc, in, opts)
	if got.Skipped != want.Skipped {
		t.Fatalf("%s: skipped\n got %+v\nwant %+v", step, got.Skipped, want.Skipped)
	}
	if len(got.CLAs) != len(want.CLAs) || len(got.Encoded) != len(got.CLAs) {
		t.Fatalf("%s: %d CLAs (%d encoded), want %d", step, len(got.CLAs), len(got.Encoded), len(want.CLAs))
	}
	det := proto.MarshalOptions{Deterministic: true}
	for i, w := range want.CLAs {
		wb, err := det.Marshal(w)
		if err != nil {
			t.Fatalf("%s: marshal: %v", step, err)
		}
		gb, err := det.Marshal(got.CLAs[i])
		if err != nil {
			t.Fatalf("%s: marshal: %v", step, err)
		}
		if !bytes.Equal(gb, wb) {
			t.Fatalf("%s: CLA %s differs\n got %v\nwant %v", step, w.ClusterName, summarize(got.CLAs[i]), summarize(w))
		}
		if got.Encoded[i] == nil {
			t.Fatalf("%s: CLA %s has no encoding", step, w.ClusterName)
		}
		if eb := bytes.Join(got.Encoded[i], nil); !bytes.Equal(eb, wb) {
			t.Fatalf("%s: CLA %s: the assembled encoding (%d bytes) is not the deterministic marshal (%d bytes)", step, w.ClusterName, len(eb), len(wb))
		}
	}
	if len(got.Topologies) != len(want.Topologies) {
		t.Fatalf("%s: %d topologies, want %d", step, len(got.Topologies), len(want.Topologies))
	}
	for name, wt := range want.Topologies {
		gt := got.Topologies[name]
		if gt == nil {
			t.Fatalf("%s: no topology for %s", step, name)
		}
		for _, v := range fuzzViews {
			if gt.Key(v) != wt.Key(v) {
				t.Fatalf("%s: %s key for %+v: %q, want %q", step, name, v, gt.Key(v), wt.Key(v))
			}
			gb, _ := det.Marshal(gt.CLA(v))
			wb, _ := det.Marshal(wt.CLA(v))
			if !bytes.Equal(gb, wb) {
				t.Fatalf("%s: %s variant for %+v differs", step, name, v)
			}
		}
	}
}

// regionTable is a NodeRegion whose answers a test changes between calls,
// as a Node's region label changes.
type regionTable map[string]string

func (r regionTable) region(node string) string { return r[node] }

// TestServiceCacheFuzzEdits runs random edit sequences over slices decoded
// the way FuzzService decodes them (invalid, foreign, duplicated, mixed
// protocols, dual-stack pairs, hints), one cache per sequence, and compares
// every step with a full translation. (It catches a cache that misses a
// changed node region; TestServiceCacheRollout is the one that catches a
// broken dual-stack pair update or an endpoint change it fails to see.)
func TestServiceCacheFuzzEdits(t *testing.T) {
	seqs, steps := 300, 60
	if testing.Short() {
		seqs = 60
	}
	for seq := range seqs {
		rng := rand.New(rand.NewPCG(uint64(seq), 14))
		randomBytes := func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return b
		}
		regions := regionTable{"n1": "r1", "n2": "r\xff"}
		opts, _, _ := decodeFuzz(randomBytes(1))
		if opts.NodeRegion != nil {
			opts.NodeRegion = regions.region
		}
		decodeOne := func() *discoveryv1.EndpointSlice {
			for {
				_, _, in := decodeFuzz(append([]byte{0, 1}, randomBytes(120)...))
				if len(in) == 1 && in[0] != nil {
					if rng.IntN(4) != 0 { // mostly the Service's own slices
						in[0].Namespace = testNS
						in[0].Labels = map[string]string{translate.ServiceNameLabel: testSvc}
					}
					return in[0]
				}
			}
		}
		uids := 0
		newSlice := func() *discoveryv1.EndpointSlice {
			s := decodeOne()
			uids++
			s.Name = "s" + strconv.Itoa(uids)
			s.UID = types.UID("uid-" + strconv.Itoa(uids))
			s.ResourceVersion = "1"
			return s
		}
		var in []*discoveryv1.EndpointSlice
		for range rng.IntN(6) {
			in = append(in, newSlice())
		}
		c := translate.NewServiceCache(testNS, testSvc)
		for step := range steps {
			live := 0
			for _, s := range in {
				if s != nil {
					live++
				}
			}
			op := rng.IntN(10)
			if live == 0 && (op < 5 || op == 6) {
				op = 5
			}
			if op < 5 || op == 6 {
				// The edits below take in[0]: bring a random non-nil slice there.
				for {
					if i := rng.IntN(len(in)); in[i] != nil {
						in[0], in[i] = in[i], in[0]
						break
					}
				}
			}
			switch {
			case op < 3: // the slice rewritten: same UID, new content
				i := 0
				s := decodeOne()
				s.Name, s.UID = in[i].Name, in[i].UID
				rv, _ := strconv.Atoi(in[i].ResourceVersion)
				s.ResourceVersion = strconv.Itoa(rv + 1)
				in[i] = s
			case op == 3: // a new resourceVersion, same content
				i := 0
				s := in[i].DeepCopy()
				s.ResourceVersion += "x"
				in[i] = s
			case op == 4: // deleted
				i := 0
				in = append(in[:i:i], in[i+1:]...)
			case op == 5:
				in = append(in, newSlice())
			case op == 6: // no UID: translated every time
				i := 0
				s := in[i].DeepCopy()
				s.UID, s.ResourceVersion = "", ""
				in[i] = s
			case op == 7:
				in = append(in, nil)
			case op == 8: // a Node's region changed
				regions["n1"] = []string{"r1", "r2", ""}[rng.IntN(3)]
			default:
				in = shuffled(rng, in)
			}
			if rng.IntN(40) == 0 { // other options: the cache starts again
				o, _, _ := decodeFuzz(randomBytes(1))
				if o.NodeRegion != nil {
					o.NodeRegion = regions.region
				}
				opts = o
			}
			got := c.Translate(in, opts)
			checkSameAsService(t, fmt.Sprintf("seq %d step %d", seq, step), got, in, opts)
		}
	}
}

// TestServiceCacheRollout rolls a dual-stack Service with hints, pod by
// pod, through every state (new and unready, ready, terminating, gone),
// with pods moving between slices and zones, and compares every step with
// a full translation; it also checks that a step touching one slice
// leaves the other ports' and endpoints' pieces shared.
func TestServiceCacheRollout(t *testing.T) {
	for _, opts := range []translate.Options{
		{},
		{IncludeUnready: true, Family: translate.IPFamilyDual},
		{Family: translate.IPFamilyIPv4},
		{InternalTrafficLocal: true, NodeRegion: func(n string) string { return "region-" + n[len(n)-1:] }},
	} {
		rng := rand.New(rand.NewPCG(7, uint64(opts.Family)))
		const nSlices, perSlice = 6, 12
		type podState struct {
			name, zone, node string
			cond             int // 0 unready, 1 ready, 2 terminating
			hinted, named    bool
		}
		pods := make([][]podState, nSlices)
		next := 0
		newPod := func() podState {
			next++
			return podState{name: fmt.Sprintf("web-%d", next), zone: []string{"a", "b", "c"}[next%3], node: fmt.Sprintf("n%d", next%4), cond: 1, hinted: next%5 != 0}
		}
		for s := range pods {
			for range perSlice {
				pods[s] = append(pods[s], newPod())
			}
		}
		rvs := make([]int, nSlices)
		build := func(s int) []*discoveryv1.EndpointSlice {
			rvs[s]++
			var e4, e6 []discoveryv1.Endpoint
			for _, p := range pods[s] {
				n, _ := strconv.Atoi(p.name[4:])
				var c []epOpt
				switch p.cond {
				case 0:
					c = append(c, conds(ptr(false), ptr(false), ptr(false)))
				case 2:
					c = append(c, conds(ptr(false), ptr(true), ptr(true)))
				}
				c = append(c, zone(p.zone), node(p.node), pod(p.name))
				if p.named {
					c = append(c, hostname(p.name))
				}
				e := ep(fmt.Sprintf("10.1.%d.%d", n/250, n%250), c...)
				if p.hinted {
					e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: p.zone}}}
				}
				e.TargetRef.UID = types.UID(p.name)
				e4 = append(e4, e)
				e6e := *e.DeepCopy()
				e6e.Addresses = []string{fmt.Sprintf("fd00::1:%x", n)}
				e6 = append(e6, e6e)
			}
			p := ports(tcp("http", 8080), withProto(tcp("dns", 53), corev1.ProtocolUDP))
			a, b := v4(fmt.Sprintf("web-%d", s), p, e4...), v6(fmt.Sprintf("web6-%d", s), p, e6...)
			a.UID, b.UID = types.UID(a.Name), types.UID(b.Name)
			a.ResourceVersion, b.ResourceVersion = strconv.Itoa(rvs[s]), strconv.Itoa(rvs[s])
			return []*discoveryv1.EndpointSlice{a, b}
		}
		cur := make([][]*discoveryv1.EndpointSlice, nSlices)
		for s := range cur {
			cur[s] = build(s)
		}
		flat := func() []*discoveryv1.EndpointSlice {
			var out []*discoveryv1.EndpointSlice
			for _, p := range cur {
				out = append(out, p...)
			}
			return out
		}
		c := translate.NewServiceCache(testNS, testSvc)
		checkSameAsService(t, "initial", c.Translate(flat(), opts), flat(), opts)
		steps := 200
		if testing.Short() {
			steps = 50
		}
		for step := range steps {
			s := rng.IntN(nSlices)
			if len(pods[s]) == 0 {
				pods[s] = append(pods[s], newPod())
			}
			i := rng.IntN(len(pods[s]))
			switch p := &pods[s][i]; {
			case p.cond == 1 && rng.IntN(3) == 0:
				p.cond = 2
			case p.cond == 2:
				pods[s] = append(pods[s][:i:i], pods[s][i+1:]...)
			case p.cond == 0:
				p.cond = 1
			case rng.IntN(4) == 0:
				p.zone = []string{"a", "b", "c"}[rng.IntN(3)]
			case rng.IntN(4) == 0:
				p.hinted = !p.hinted
			case rng.IntN(3) == 0:
				p.named = !p.named
			default:
				np := newPod()
				np.cond = 0
				pods[s] = append(pods[s], np)
			}
			next := build(s)
			// Half the time the IPv4 slice is seen first, alone, as the
			// controller writes the two families apart.
			if rng.IntN(2) == 0 {
				cur[s] = []*discoveryv1.EndpointSlice{next[0], cur[s][1]}
				got := c.Translate(flat(), opts)
				checkSameAsService(t, fmt.Sprintf("opts %+v step %d (IPv4 first)", opts, step), got, flat(), opts)
			}
			cur[s] = next
			got := c.Translate(flat(), opts)
			checkSameAsService(t, fmt.Sprintf("opts %+v step %d", opts, step), got, flat(), opts)
		}
	}
}
