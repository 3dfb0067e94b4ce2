package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/deltaeds/deltaeds/bench/control"
)

// curvePoint is one server at one point of a curve workload.
type curvePoint struct {
	Streams, Subscriptions int
	Server                 string
	PeakRSSBytes           uint64
	// Above the wire limit's peak RSS at the same point, per stream and per
	// subscription (NaN without a wire result).
	PerStream, PerSubscription float64
	// PeakLiveBytes is the server's largest live heap after a GC;
	// LivePerSubscription its excess over the wire limit's per subscription:
	// the peak without the GC's headroom, which peak RSS includes.
	PeakLiveBytes       uint64
	LivePerSubscription float64
	CPUPer1k, CPUvsWire float64
	P99, P99vsWire      float64
	Error               string
}

// curve gathers the points of the named curve workload, in run order.
func (rep *Report) curve(name string) []curvePoint {
	var out []curvePoint
	for _, wr := range rep.Workloads {
		if wr.Workload.Name != name || len(wr.Workload.Curve) == 0 {
			continue
		}
		wire := wr.resultOf(control.KindWire)
		for _, r := range wr.Results {
			p := curvePoint{Streams: wr.Workload.Streams, Subscriptions: r.Subscriptions, Server: r.Server,
				PeakRSSBytes: r.PeakRSSBytes, PeakLiveBytes: r.PeakLiveHeapBytes, CPUPer1k: r.CPUPer1kChanges, Error: r.Error,
				PerStream: math.NaN(), PerSubscription: math.NaN(), LivePerSubscription: math.NaN(), CPUvsWire: math.NaN(), P99: math.NaN(), P99vsWire: math.NaN()}
			if r.Latency != nil {
				p.P99 = r.Latency.P99
			}
			if wire != nil && r.Error == "" {
				above := float64(r.PeakRSSBytes) - float64(wire.PeakRSSBytes)
				p.PerStream = above / float64(wr.Workload.Streams)
				if r.Subscriptions > 0 {
					p.PerSubscription = above / float64(r.Subscriptions)
					if r.PeakLiveHeapBytes > 0 && wire.PeakLiveHeapBytes > 0 {
						p.LivePerSubscription = (float64(r.PeakLiveHeapBytes) - float64(wire.PeakLiveHeapBytes)) / float64(r.Subscriptions)
					}
				}
				if wire.CPUPer1kChanges > 0 {
					p.CPUvsWire = r.CPUPer1kChanges / wire.CPUPer1kChanges
				}
				if wire.Latency != nil && wire.Latency.P99 > 0 {
					p.P99vsWire = p.P99 / wire.Latency.P99
				}
			}
			out = append(out, p)
		}
	}
	return out
}

func printCurve(out io.Writer, pts []curvePoint) {
	if len(pts) == 0 {
		return
	}
	fmt.Fprintln(out, "== fleet-curve: cost as the fleet grows (above the wire limit's peak RSS at the same point)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tsubscriptions\tserver\tpeak RSS MB\tB/stream\tB/subscription\tpeak live MB\tlive B/sub\tcpu s/1k chg\tx wire\tp99 ms\tx wire\t")
	f := func(v float64, format string) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	for _, p := range pts {
		if p.Error != "" {
			fmt.Fprintf(tw, "%d\t%d\t%s\tFAILED\t\t\t\t\t\t\t\t\t\n", p.Streams, p.Subscriptions, p.Server)
			continue
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t\n", p.Streams, p.Subscriptions, p.Server, mb(p.PeakRSSBytes),
			f(p.PerStream, "%.0f"), f(p.PerSubscription, "%.1f"), mb(p.PeakLiveBytes), f(p.LivePerSubscription, "%.1f"), p.CPUPer1k, f(p.CPUvsWire, "%.2fx"), f(p.P99, "%.1f"), f(p.P99vsWire, "%.2fx"))
	}
	_ = tw.Flush()
	if m := marginal(pts); len(m) > 0 {
		fmt.Fprintf(out, "   marginal memory per subscription from the first point to the last (peak RSS growth over subscriptions added):")
		for _, s := range m {
			fmt.Fprintf(out, " %s %.1f B", s.server, s.perSub)
			if !math.IsNaN(s.aboveWire) {
				fmt.Fprintf(out, " (%+.1f B vs wire)", s.aboveWire)
			}
			fmt.Fprint(out, ";")
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out, "   (B/stream, B/subscription: peak RSS above the wire limit's at the same point, baseline differences included;")
	fmt.Fprintln(out, "    peak live: the largest heap a GC found live, live B/sub its excess over the wire limit's per subscription)")
	fmt.Fprintln(out)
}

type slope struct {
	server            string
	perSub, aboveWire float64
}

// marginal is each server's peak RSS growth per subscription between the
// curve's first and last points, which cancels the fixed baseline, and its
// difference to the wire limit's.
func marginal(pts []curvePoint) []slope {
	var out []slope
	first, last := map[string]curvePoint{}, map[string]curvePoint{}
	var order []string
	for _, p := range pts {
		if p.Error != "" {
			continue
		}
		if _, ok := first[p.Server]; !ok {
			first[p.Server] = p
			order = append(order, p.Server)
		}
		last[p.Server] = p
	}
	wire := math.NaN()
	per := func(s string) float64 {
		a, b := first[s], last[s]
		if b.Subscriptions <= a.Subscriptions {
			return math.NaN()
		}
		return (float64(b.PeakRSSBytes) - float64(a.PeakRSSBytes)) / float64(b.Subscriptions-a.Subscriptions)
	}
	if _, ok := first[control.KindWire]; ok {
		wire = per(control.KindWire)
	}
	for _, s := range order {
		v := per(s)
		if math.IsNaN(v) {
			continue
		}
		out = append(out, slope{server: s, perSub: v, aboveWire: v - wire})
	}
	return out
}

// curveTargets checks issue 14's fleet-curve targets at every point, and
// the memory per subscription over the whole curve (the marginal growth,
// which no fixed baseline distorts).
func curveTargets(pts []curvePoint, scale float64) []Target {
	var out []Target
	for _, s := range marginal(pts) {
		if s.server == control.KindDeltaEDS && !math.IsNaN(s.aboveWire) {
			out = append(out, Target{Workload: "fleet-curve", Scale: scale, Name: "marginal memory per subscription above wire",
				Want: "<= 64 B", Got: fmt.Sprintf("%.1f B", s.aboveWire), Status: check(s.aboveWire <= 64)})
		}
	}
	for _, p := range pts {
		if p.Server != control.KindDeltaEDS {
			continue
		}
		w := fmt.Sprintf("fleet-curve/%d", p.Streams)
		add := func(name, want string, v float64, ok bool, format string) {
			t := Target{Workload: w, Scale: scale, Name: name, Want: want, Status: "SKIP"}
			if !math.IsNaN(v) && p.Error == "" {
				t.Got, t.Status = fmt.Sprintf(format, v), check(ok)
			}
			out = append(out, t)
		}
		add("memory per subscription above wire", "<= 64 B", p.PerSubscription, p.PerSubscription <= 64, "%.1f B")
		add("cpu/change vs wire", "deltaeds/wire <= 1.2", p.CPUvsWire, p.CPUvsWire <= 1.2, "%.2f")
		add("p99 vs wire", "deltaeds/wire <= 1.5", p.P99vsWire, p.P99vsWire <= 1.5, "%.2f")
	}
	return out
}

// curvePanels draws the curve: peak RSS, peak live heap, CPU per change and p99 against
// the number of streams, one line per server.
func curvePanels(name string, pts []curvePoint) ([]*plot.Plot, error) {
	type metric struct {
		title, unit string
		get         func(curvePoint) float64
	}
	metrics := []metric{
		{"peak RSS", "MB", func(p curvePoint) float64 { return float64(p.PeakRSSBytes) / 1e6 }},
		{"peak live heap", "MB", func(p curvePoint) float64 { return float64(p.PeakLiveBytes) / 1e6 }},
		{"CPU per 1k changes", "s", func(p curvePoint) float64 { return p.CPUPer1k }},
		{"p99 change-to-all-subscribers", "ms", func(p curvePoint) float64 { return p.P99 }},
	}
	var servers []string
	for _, p := range pts {
		if !slices.Contains(servers, p.Server) {
			servers = append(servers, p.Server)
		}
	}
	var out []*plot.Plot
	for _, m := range metrics {
		pl := plot.New()
		pl.Title.Text = fmt.Sprintf("%s: %s", name, m.title)
		pl.X.Label.Text = "streams"
		pl.Y.Label.Text = m.unit
		pl.Legend.Top = true
		pl.Legend.Left = true
		pl.Add(plotter.NewGrid())
		for _, s := range servers {
			var xys plotter.XYs
			for _, p := range pts {
				if p.Server == s && p.Error == "" && !math.IsNaN(m.get(p)) {
					xys = append(xys, plotter.XY{X: float64(p.Streams), Y: m.get(p)})
				}
			}
			if len(xys) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return nil, fmt.Errorf("curve %s %s: %w", m.title, s, err)
			}
			line.Color, points.Color = serverColors[s], serverColors[s]
			line.Width = vg.Points(1.5)
			pl.Add(line, points)
			pl.Legend.Add(s, line, points)
		}
		pl.Y.Min = 0
		out = append(out, pl)
	}
	return out, nil
}
