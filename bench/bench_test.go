package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deltaeds/deltaeds/bench/control"
	"github.com/deltaeds/deltaeds/bench/servers"
)

// childArgsEnv carries a child's arguments when the test binary re-executes
// itself as a server child.
const childArgsEnv = "EDSBENCH_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(childArgsEnv); ok {
		os.Exit(servers.ChildMain(strings.Split(args, "\x1f")))
	}
	goleak.VerifyTestMain(m)
}

// testCommand runs a child as this test binary, which TestMain turns into
// the server.
func testCommand(args []string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+strings.Join(args, "\x1f"))
	return cmd
}

// TestRunTiny runs every workload on every server at the smallest scale,
// end to end, and checks that every run completed correctly: all changes
// delivered, no protocol violation, nothing resent on reconnect.
func TestRunTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var out, log bytes.Buffer
	rep, err := Run(ctx, Options{
		Profile:    "tiny",
		Scale:      0.01,
		Command:    testCommand,
		ResultsDir: dir,
		Out:        &out,
		Log:        &log,
		Seed:       7,
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	want := 0
	for _, name := range WorkloadNames() {
		w, err := ScaledWorkload(name, 0.01, 1)
		if err != nil {
			t.Fatal(err)
		}
		want += len(w.Points())
	}
	if got := len(rep.Workloads); got != want {
		t.Fatalf("%d workloads reported, want %d (curve points count one each)", got, want)
	}
	for _, wr := range rep.Workloads {
		runs := 0
		for _, k := range control.Kinds {
			if wr.Workload.RunsOn(k) {
				runs++
			}
		}
		if wr.Workload.Zones > 0 {
			runs++ // deltaeds twice: with zone variants, and single-view
		}
		if len(wr.Results) != runs {
			t.Errorf("%s: %d results, want %d", wr.Workload.Name, len(wr.Results), runs)
		}
		if wr.Workload.Zones > 0 {
			for _, r := range wr.Results {
				zoned := r.Server == "deltaeds"
				if zoned && (r.VariantsPerChange <= 0 || r.VariantsPerChange > float64(wr.Workload.Zones)) || !zoned && r.VariantsPerChange != 0 {
					t.Errorf("%s/%s: %.2f variants built per change, want 0 < n <= %d zones with variants, 0 without",
						wr.Workload.Name, r.Server, r.VariantsPerChange, wr.Workload.Zones)
				}
			}
		}
		for _, r := range wr.Results {
			name := wr.Workload.Name + "/" + r.Server
			switch {
			case r.Error != "":
				t.Errorf("%s failed: %s", name, r.Error)
			case r.Violations != 0:
				t.Errorf("%s: %d violations: %v", name, r.Violations, r.ViolationSamples)
			case wr.Workload.Restart && (r.Resent == nil || *r.Resent != 0):
				t.Errorf("%s: resent = %v, want 0", name, r.Resent)
			case wr.Workload.Cluster && (r.Cluster == nil || r.Cluster.SyncSeconds <= 0 || r.Cluster.RSSBytes == 0 || r.Cluster.APIServerRSSBytes == 0):
				t.Errorf("%s: cluster figures missing: %+v", name, r.Cluster)
			case wr.Workload.Cluster:
			case !wr.Workload.Restart && (r.Delivered != r.Changes || r.Changes != wr.Workload.Changes || r.Latency == nil):
				t.Errorf("%s: delivered %d of %d changes (workload has %d), latency %v", name, r.Delivered, r.Changes, wr.Workload.Changes, r.Latency)
			case r.PeakRSSBytes == 0:
				t.Errorf("%s: no peak RSS", name)
			}
		}
	}
	if !strings.Contains(out.String(), "== targets") {
		t.Errorf("no targets table in output")
	}
	b, err := os.ReadFile(rep.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	if png, err := os.ReadFile(rep.PNGPath); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("plot %s: not a PNG (err %v)", rep.PNGPath, err)
	}
}
