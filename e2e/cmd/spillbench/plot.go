package main

import (
	"image/color"
	"os"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/regions"
)

var regionColors = map[string]color.RGBA{
	"us-east": {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"us-west": {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"eu-west": {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// drawPlot draws Spillway's run per second: offered load per region, requests leaving us-east by
// target region, and TTFT p50 of the requests each region's clients sent.
func drawPlot(out *outcome, path string) error {
	load := newPanel("offered load (requests/s) by region", "requests/s")
	spill := newPanel("requests leaving us-east (per s) by region that served them", "requests/s")
	ttft := newPanel("TTFT p50 (ms) of each region's clients, successful requests", "ms")
	east := out.run.Regions[0]
	for _, reg := range regions.Names {
		rs := out.results[reg]
		c := regionColors[reg]
		if err := addLine(load, reg, c, perSecond(out.start, rs, func(loadgen.Result) bool { return true }, nil)); err != nil {
			return err
		}
		if reg != east.Name {
			away := func(r loadgen.Result) bool { return out.run.RemoteRegion(east, r) == reg }
			if err := addLine(spill, reg, c, perSecond(out.start, out.results[east.Name], away, nil)); err != nil {
				return err
			}
		}
		if err := addLine(ttft, reg, c, perSecond(out.start, rs, loadgen.Result.OK, func(r loadgen.Result) float64 {
			return float64(r.TTFT) / float64(time.Millisecond)
		})); err != nil {
			return err
		}
	}
	img := vgimg.New(9*vg.Inch, 10*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{{load}, {spill}, {ttft}}, tiles, dc)
	for i, p := range []*plot.Plot{load, spill, ttft} {
		p.Draw(canvases[i][0])
	}
	png := vgimg.PngCanvas{Canvas: img}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = png.WriteTo(f)
	return err
}

func newPanel(title, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func addLine(p *plot.Plot, name string, c color.RGBA, pts plotter.XYs) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// perSecond buckets the requests that keep selects by the second they started: their count, or
// with value the median of value.
func perSecond(start time.Time, rs []loadgen.Result, keep func(loadgen.Result) bool, value func(loadgen.Result) float64) plotter.XYs {
	buckets := map[int][]float64{}
	last := 0
	for _, r := range rs {
		s := int(r.Start.Sub(start) / time.Second)
		last = max(last, s)
		if keep(r) {
			v := 1.0
			if value != nil {
				v = value(r)
			}
			buckets[s] = append(buckets[s], v)
		}
	}
	pts := make(plotter.XYs, 0, last+1)
	for s := 0; s <= last; s++ {
		b := buckets[s]
		y := float64(len(b))
		if value != nil {
			if len(b) == 0 {
				continue
			}
			slices.Sort(b)
			y = b[len(b)/2]
		}
		pts = append(pts, plotter.XY{X: float64(s), Y: y})
	}
	return pts
}
