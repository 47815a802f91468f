package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// Frame is one view of `switchyard ctl watch`: the kernel's status at a
// moment, with rates since the previous frame.
type Frame struct {
	Time   time.Time
	Status json.RawMessage // the status command's data
	// ListenerRates (requests/s) and PluginRates (served/s) are the rates
	// since the previous frame, by name. A name has none in the first
	// frame, when it is new, when its counter went back, and when the
	// kernel is not the one of the previous frame (its pid changed or its
	// uptime did not grow).
	ListenerRates map[string]float64
	PluginRates   map[string]float64
}

// Rater turns successive status replies into Frames. The zero value is
// ready; it is not safe for concurrent use.
type Rater struct {
	pid       string
	uptime    float64 // seconds, as the kernel counts them
	at        time.Time
	listeners map[string]float64 // requests, by listener
	plugins   map[string]float64 // served, by plugin
}

// Frame makes the frame of a status reply received at at. The time between
// frames is the growth of the kernel's uptime_s, so that the rates do not
// depend on how long the replies took to arrive; without it, the time
// between the calls.
func (r *Rater) Frame(at time.Time, status json.RawMessage) (Frame, error) {
	fs, ok := objectFields(bytes.TrimSpace(status))
	if !ok {
		return Frame{}, errors.New("admin: watch: the status reply is not an object")
	}
	pidV, _ := get(fs, "pid")
	pid := string(bytes.TrimSpace(pidV))
	uptime, hasUptime := number(fs, "uptime_s")
	listeners := counters(fs, "listeners", "requests")
	plugins := counters(fs, "plugins", "served")

	elapsed := at.Sub(r.at).Seconds()
	if hasUptime {
		elapsed = uptime - r.uptime
	}
	f := Frame{Time: at, Status: status}
	if r.listeners != nil && pid == r.pid && elapsed > 0 {
		f.ListenerRates = rates(r.listeners, listeners, elapsed)
		f.PluginRates = rates(r.plugins, plugins, elapsed)
	}
	r.pid, r.uptime, r.at, r.listeners, r.plugins = pid, uptime, at, listeners, plugins
	return f, nil
}

// number reads the number fs holds under key.
func number(fs []field, key string) (float64, bool) {
	v, ok := get(fs, key)
	if !ok {
		return 0, false
	}
	var x float64
	if json.Unmarshal(v, &x) != nil {
		return 0, false
	}
	return x, true
}

// counters reads, from the table fs holds under table, each row's counter
// field by the row's name.
func counters(fs []field, table, counter string) map[string]float64 {
	out := map[string]float64{}
	eachNamed(fs, table, func(name string, row []field) {
		if x, ok := number(row, counter); ok {
			out[name] = x
		}
	})
	return out
}

// eachNamed calls f with each row that has a name in the table fs holds
// under table.
func eachNamed(fs []field, table string, f func(name string, row []field)) {
	v, _ := get(fs, table)
	rows, _ := objectRows(v)
	for _, row := range rows {
		if name, ok := rowName(row); ok {
			f(name, row)
		}
	}
}

func rates(prev, cur map[string]float64, seconds float64) map[string]float64 {
	out := map[string]float64{}
	for name, c := range cur {
		if p, ok := prev[name]; ok && c >= p {
			out[name] = (c - p) / seconds
		}
	}
	return out
}

// MarshalJSON writes the frame as `ctl watch -json` prints it:
// {"time":..., "status":..., "rates":{"listeners":{NAME:R}, "plugins":{NAME:R}}},
// with a rate of null where there is none.
func (f Frame) MarshalJSON() ([]byte, error) {
	fs, _ := objectFields(bytes.TrimSpace(f.Status))
	all := func(table string, have map[string]float64) map[string]*float64 {
		out := map[string]*float64{}
		eachNamed(fs, table, func(name string, _ []field) {
			out[name] = nil
			if r, ok := have[name]; ok {
				out[name] = &r
			}
		})
		return out
	}
	type rates struct {
		Listeners map[string]*float64 `json:"listeners"`
		Plugins   map[string]*float64 `json:"plugins"`
	}
	status := f.Status
	if len(bytes.TrimSpace(status)) == 0 {
		status = json.RawMessage("null")
	}
	return json.Marshal(struct {
		Time   time.Time       `json:"time"`
		Status json.RawMessage `json:"status"`
		Rates  rates           `json:"rates"`
	}{f.Time, status, rates{all("listeners", f.ListenerRates), all("plugins", f.PluginRates)}})
}

// rowName is a table row's name.
func rowName(row []field) (string, bool) {
	v, ok := get(row, "name")
	var name string
	if !ok || json.Unmarshal(v, &name) != nil {
		return "", false
	}
	return name, true
}

// RenderFrame writes f for humans: a line with the time, the status
// summary (as Render shows status), then the listeners table with a REQ/S
// column and the plugins table with a SERVED/S column. A rate is shown
// with one decimal, or "-" when there is none.
func RenderFrame(w io.Writer, f Frame) error {
	fs, ok := objectFields(bytes.TrimSpace(f.Status))
	if !ok {
		return errors.New("admin: watch: the status reply is not an object")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "switchyard  %s\n", f.Time.Format(time.RFC3339))
	if err := renderKeyValues(&b, statusSummary(fs)); err != nil {
		return err
	}
	for _, t := range []struct {
		key, counter, head, rate string
		cols                     []column
		rates                    map[string]float64
	}{
		{"listeners", "requests", "REQ/S", "requests_per_s", listenerColumns, f.ListenerRates},
		{"plugins", "served", "SERVED/S", "served_per_s", pluginColumns, f.PluginRates},
	} {
		v, _ := get(fs, t.key)
		rows, isRows := objectRows(v)
		if !isRows {
			continue
		}
		cols := withColumn(t.cols, t.counter, column{t.head, t.rate})
		for i, row := range rows {
			rate := json.RawMessage("null")
			if name, ok := rowName(row); ok {
				if r, ok := t.rates[name]; ok && !math.IsInf(r, 0) && !math.IsNaN(r) {
					rate = json.RawMessage(strconv.FormatFloat(r, 'f', 1, 64))
				}
			}
			rows[i] = append(row, field{t.rate, rate})
		}
		fmt.Fprintf(&b, "\n%s:\n", t.key)
		if err := renderTable(&b, "  ", cols, rows); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// withColumn returns cols with c inserted after the column of field after.
func withColumn(cols []column, after string, c column) []column {
	out := make([]column, 0, len(cols)+1)
	for _, col := range cols {
		out = append(out, col)
		if col.field == after {
			out = append(out, c)
		}
	}
	return out
}

// WatchOptions configure Watch.
type WatchOptions struct {
	// Interval is the time between frames (one second when zero).
	Interval time.Duration
	// Count stops after that many frames; zero runs until ctx ends.
	Count int
	// Clear clears the terminal before each frame (ANSI); otherwise frames
	// are separated by a blank line.
	Clear bool
	// JSON writes each frame as one line of JSON (see Frame.MarshalJSON).
	JSON bool
	// Timeout bounds each exchange with the kernel; zero means none.
	Timeout time.Duration
}

// ErrGone is returned by Watch when the kernel stops answering.
var ErrGone = errors.New("the kernel went away")

// clearScreen moves the cursor home and clears the screen.
const clearScreen = "\x1b[H\x1b[2J"

// Watch writes a frame of the kernel's status at path to w every interval,
// with rates since the previous frame, until ctx ends (nil) or Count
// frames are written (nil). The first frame is written at once. When the
// kernel cannot be reached at first, the error is Dial's; when it stops
// answering, Watch dials once more (an upgraded kernel answers on the same
// socket) and otherwise returns an error wrapping ErrGone.
func Watch(ctx context.Context, path string, o WatchOptions, w io.Writer) error {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	c, err := dial(ctx, path, o.Timeout)
	if err != nil {
		return err
	}
	defer func() { c.Close() }()
	var rater Rater
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for n := 0; ; {
		rep, err := status(ctx, c, o.Timeout)
		if err != nil && ctx.Err() == nil {
			lost := err
			c.Close()
			var again *Client
			if again, err = dial(ctx, path, o.Timeout); err == nil {
				c = again
				rep, err = status(ctx, c, o.Timeout)
			}
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("%w: %w", ErrGone, lost)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if !rep.OK {
			return fmt.Errorf("status: %s", rep.Error)
		}
		f, err := rater.Frame(time.Now(), rep.Data)
		if err != nil {
			return err
		}
		if err := writeFrame(w, f, o, n); err != nil {
			return err
		}
		if n++; o.Count > 0 && n >= o.Count {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func dial(ctx context.Context, path string, timeout time.Duration) (*Client, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return Dial(ctx, path)
}

func status(ctx context.Context, c *Client, timeout time.Duration) (Reply, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return c.Do(ctx, "status")
}

// writeFrame writes frame number n (from 0) as o asks.
func writeFrame(w io.Writer, f Frame, o WatchOptions, n int) error {
	var b bytes.Buffer
	switch {
	case o.JSON:
		j, err := json.Marshal(f)
		if err != nil {
			return err
		}
		b.Write(j)
		b.WriteByte('\n')
	default:
		if o.Clear {
			b.WriteString(clearScreen)
		} else if n > 0 {
			b.WriteByte('\n')
		}
		if err := RenderFrame(&b, f); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}
