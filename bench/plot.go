package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/deltaeds/deltaeds/bench/control"
)

var serverColors = map[string]color.Color{
	control.KindDeltaEDS: color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	control.KindLinear:   color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	control.KindSnapshot: color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	control.KindWire:     color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff},
}

// writePlot draws one panel per workload: the CDF of change-to-all-
// subscribers latency of every server on a log scale, or, for the
// reconnect workload, the resources each server resent.
func writePlot(rep *Report, path string) error {
	var panels []*plot.Plot
	for i, wr := range rep.Workloads {
		p, err := workloadPanel(wr)
		if err != nil {
			return fmt.Errorf("plot %s: %w", wr.Workload.Name, err)
		}
		panels = append(panels, p)
		name := wr.Workload.Name
		if len(wr.Workload.Curve) > 0 && (i+1 == len(rep.Workloads) || rep.Workloads[i+1].Workload.Name != name) {
			cp, err := curvePanels(name, rep.curve(name))
			if err != nil {
				return fmt.Errorf("plot %s: %w", name, err)
			}
			panels = append(panels, cp...)
		}
	}
	if len(panels) == 0 {
		p := plot.New()
		p.Title.Text = "no results"
		panels = append(panels, p)
	}
	cols := min(2, len(panels))
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
		for j := range grid[i] {
			if k := i*cols + j; k < len(panels) {
				grid[i][j] = panels[k]
			}
		}
	}
	const panelW, panelH = 6 * vg.Inch, 4 * vg.Inch
	img := vgimg.New(vg.Length(cols)*panelW, vg.Length(rows)*panelH)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j := range grid[i] {
			if grid[i][j] != nil {
				grid[i][j].Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("write plot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	return nil
}

func workloadPanel(wr WorkloadReport) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (scale %.2f)", wr.Workload.Name, wr.Workload.Scale)
	p.Legend.Top = false
	p.Legend.Left = false
	if len(wr.Workload.Curve) > 0 {
		p.Title.Text = fmt.Sprintf("%s, %d streams (scale %.2f)", wr.Workload.Name, wr.Workload.Streams, wr.Workload.Scale)
	}
	switch {
	case wr.Workload.Cluster:
		return clusterPanel(p, wr)
	case wr.Workload.Storm:
		p.Title.Text += ": until every stream's first answer"
		p.Y.Label.Text = "seconds"
		var names []string
		var vals plotter.Values
		for _, r := range wr.Results {
			if r.Error == "" {
				names = append(names, r.Server)
				vals = append(vals, r.ReconnectSeconds)
			}
		}
		if len(vals) == 0 {
			return p, nil
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(30))
		if err != nil {
			return nil, fmt.Errorf("bars: %w", err)
		}
		bars.Color = serverColors[control.KindDeltaEDS]
		p.Add(bars)
		p.NominalX(names...)
		return p, nil
	}
	if wr.Workload.Restart {
		p.Title.Text += ": resources resent on reconnect"
		p.Y.Label.Text = "resources resent"
		var names []string
		var vals plotter.Values
		for _, r := range wr.Results {
			if r.Resent == nil {
				continue
			}
			names = append(names, r.Server)
			vals = append(vals, float64(*r.Resent))
		}
		if len(vals) == 0 {
			return p, nil
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(30))
		if err != nil {
			return nil, fmt.Errorf("bars: %w", err)
		}
		bars.Color = serverColors[control.KindDeltaEDS]
		p.Add(bars)
		p.NominalX(names...)
		if slices.Max(vals) == 0 {
			p.Y.Max = 1 // all zero: keep the axis readable
		}
		return p, nil
	}
	p.X.Label.Text = "change-to-all-subscribers latency, ms (log)"
	p.Y.Label.Text = "fraction of changes"
	p.Y.Min, p.Y.Max = 0, 1
	if !slices.ContainsFunc(wr.Results, func(r Result) bool { return len(r.CDF) > 0 }) {
		p.Title.Text += ": no results"
		return p, nil
	}
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	for _, r := range wr.Results {
		if len(r.CDF) == 0 {
			continue
		}
		xys := make(plotter.XYs, 0, len(r.CDF)+1)
		first := math.Max(r.CDF[0].Ms, 0.01)
		xys = append(xys, plotter.XY{X: first, Y: 0})
		for _, pt := range r.CDF {
			xys = append(xys, plotter.XY{X: math.Max(pt.Ms, 0.01), Y: pt.Fraction})
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("line %s: %w", r.Server, err)
		}
		line.Color = serverColors[r.Server]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (p99 %.1f ms)", r.Server, r.Latency.P99), line)
	}
	return p, nil
}
