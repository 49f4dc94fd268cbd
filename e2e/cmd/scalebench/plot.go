package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/spillway-io/spillway/e2e/scale"
)

var (
	blue = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	red  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// drawPlot draws the hub's CPU, its memory and the fleet view's staleness against the number
// of spokes: solid for the runs with a fraction of the spokes importing, dashed for those with
// few importers.
func drawPlot(rs, few []scale.Result, importFraction float64, fewImporters int, path string) error {
	cpu := newPanel("hub CPU (cores) against connected spokes", "cores")
	rss := newPanel("hub resident memory (MiB)", "MiB")
	stale := newPanel("fleet-view staleness (ms): report to an importing spoke", "ms")
	pts := func(rs []scale.Result, y func(scale.Result) float64) plotter.XYs {
		out := make(plotter.XYs, 0, len(rs))
		for _, r := range rs {
			if r.Error == "" { // a fleet that failed has no steady state to plot
				out = append(out, plotter.XY{X: float64(r.Spokes), Y: y(r)})
			}
		}
		return out
	}
	lines := []struct {
		p    *plot.Plot
		name string
		c    color.RGBA
		y    func(scale.Result) float64
	}{
		{cpu, "hub", blue, func(r scale.Result) float64 { return r.HubCPUCores }},
		{cpu, "load driver", red, func(r scale.Result) float64 { return r.DriverCPUCores }},
		{rss, "hub", blue, func(r scale.Result) float64 { return r.HubRSSMiB }},
		{stale, "p50", blue, func(r scale.Result) float64 { return r.StalenessP50Ms }},
		{stale, "p99", red, func(r scale.Result) float64 { return r.StalenessP99Ms }},
	}
	for _, series := range []struct {
		rs     []scale.Result
		suffix string
		dashes []vg.Length
	}{
		{rs, fmt.Sprintf(", %.0f %% importing", 100*importFraction), nil},
		{few, fmt.Sprintf(", %d importers", fewImporters), []vg.Length{vg.Points(4), vg.Points(3)}},
	} {
		for _, l := range lines {
			xy := pts(series.rs, l.y)
			if len(xy) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(xy)
			if err != nil {
				return err
			}
			line.Color, points.Color = l.c, l.c
			line.Width, line.Dashes = vg.Points(1.5), series.dashes
			l.p.Add(line, points)
			l.p.Legend.Add(l.name+series.suffix, line, points)
		}
	}
	img := vgimg.New(8*vg.Inch, 9*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter}
	ps := []*plot.Plot{cpu, rss, stale}
	canvases := plot.Align([][]*plot.Plot{{cpu}, {rss}, {stale}}, tiles, dc)
	for i, p := range ps {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(f)
	return err
}

func newPanel(title, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "spokes"
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p
}
