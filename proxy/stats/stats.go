// Package stats keeps a short, fixed-memory history of the traffic of each
// colour: requests, instance-caused errors, client errors and a latency
// histogram per second, for the last 15 minutes. It answers "what happened
// over this window" (Window) and "what did it look like over time" (Series)
// without Prometheus, for the status page and for rollout analysis.
//
// Record runs on every request: it takes no lock in the common case (one
// mutex acquisition per colour per second, when a bucket is reused), and
// allocates nothing.
package stats

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Fault says whose fault a request's failure was.
type Fault uint8

const (
	// FaultNone: the request succeeded, or failed in a way that is nobody's
	// fault worth counting (e.g. a 404 answered by the instance).
	FaultNone Fault = iota
	// FaultInstance: the instance (or the colour as a whole) failed the
	// request: a 5xx from the instance, or 502/503/504 made by the proxy.
	FaultInstance
	// FaultClient: the client failed the request: it went away (499), sent
	// a malformed request (400), was too slow (408) or too large (413).
	FaultClient
)

// FaultOf classifies a final status code the simple way: 5xx is the
// instance's fault, 499 the client's, anything else no fault. A caller that
// knows better (who produced a 400, say) passes its own Fault to Record.
func FaultOf(status int) Fault {
	switch {
	case status >= 500:
		return FaultInstance
	case status == 499:
		return FaultClient
	}
	return FaultNone
}

const (
	// Slots is how many one-second buckets each colour keeps.
	Slots = 900
	// Span is how far back Window and Series can see.
	Span = Slots * time.Second

	// The latency histogram: bucket i holds durations up to
	// histBase·2^(i/4) (4 buckets per doubling, so a quantile is known to
	// within ~19 %), from 32 µs up to ~134 s; the last bucket holds
	// everything above.
	histBuckets = 89
	histBase    = 32 * time.Microsecond
	histPerOct  = 4
)

// bounds[i] is the upper bound of histogram bucket i.
var bounds = func() (b [histBuckets]time.Duration) {
	for i := range b {
		b[i] = time.Duration(float64(histBase) * math.Pow(2, float64(i)/histPerOct))
	}
	b[histBuckets-1] = math.MaxInt64
	return b
}()

// histIndex returns the histogram bucket of d (d >= 0) without allocating
// and in a handful of instructions.
func histIndex(d time.Duration) int {
	if d <= histBase {
		return 0
	}
	// Start from the doubling (exact, via the bit length) and walk at most
	// histPerOct buckets.
	oct := bits.Len64(uint64(d/histBase)) - 1
	i := oct * histPerOct
	if i >= histBuckets {
		return histBuckets - 1
	}
	if i > 0 {
		i -= histPerOct
	}
	for i < histBuckets-1 && d > bounds[i] {
		i++
	}
	return i
}

// bucket is one second of one colour.
type bucket struct {
	sec      atomic.Int64 // Unix second this bucket holds; 0 when never used
	requests atomic.Int64
	instErrs atomic.Int64
	cliErrs  atomic.Int64
	hist     [histBuckets]atomic.Uint32
}

// series is the ring of one colour.
type series struct {
	name    string
	rotate  sync.Mutex // serialises the reuse of a bucket for a new second
	buckets [Slots]bucket
}

// Recorder holds the ring buffers of a fixed set of colours. Its memory is
// fixed at creation (~350 KiB per colour). Safe for concurrent use; it must
// not be copied.
type Recorder struct {
	now     func() time.Time
	started time.Time
	colors  []*series
}

// New returns a Recorder for the given colours; now is its clock (nil means
// time.Now).
func New(colors []string, now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	r := &Recorder{now: now, started: now()}
	for _, c := range colors {
		r.colors = append(r.colors, &series{name: c})
	}
	return r
}

// Started is when the Recorder was made: Window and Series know nothing
// of the time before.
func (r *Recorder) Started() time.Time { return r.started }

// Colors lists the recorder's colours in the order given to New.
func (r *Recorder) Colors() []string {
	out := make([]string, len(r.colors))
	for i, s := range r.colors {
		out[i] = s.name
	}
	return out
}

func (r *Recorder) series(color string) *series {
	if r == nil {
		return nil
	}
	for _, s := range r.colors {
		if s.name == color {
			return s
		}
	}
	return nil
}

// Record counts one finished request of a colour: its final status, how
// long it took and whose fault a failure was. A negative d counts the
// request without a latency (an upgraded connection or an event stream,
// whose duration is not a response time). Unknown colours and a nil
// Recorder are ignored; status is not stored today (fault carries its class).
//
// Record reads the Recorder's clock; where the caller already knows when the
// request ended, RecordAt saves that read (time.Now costs ~250 ns on some
// virtual machines, several times the rest of Record).
func (r *Recorder) Record(color string, status int, d time.Duration, fault Fault) {
	if r == nil {
		return
	}
	r.RecordAt(color, r.now(), status, d, fault)
}

// RecordAt is Record for a request that ended at end.
func (r *Recorder) RecordAt(color string, end time.Time, status int, d time.Duration, fault Fault) {
	s := r.series(color)
	if s == nil {
		return
	}
	sec := end.Unix()
	b := &s.buckets[uint64(sec)%Slots]
	if cur := b.sec.Load(); cur != sec {
		if cur > sec {
			return // a very late sample for a second already reused: drop it
		}
		s.rotate.Lock()
		if b.sec.Load() < sec {
			b.requests.Store(0)
			b.instErrs.Store(0)
			b.cliErrs.Store(0)
			for i := range b.hist {
				b.hist[i].Store(0)
			}
			b.sec.Store(sec)
		}
		s.rotate.Unlock()
		if b.sec.Load() != sec {
			return
		}
	}
	b.requests.Add(1)
	switch fault {
	case FaultInstance:
		b.instErrs.Add(1)
	case FaultClient:
		b.cliErrs.Add(1)
	}
	if d >= 0 {
		b.hist[histIndex(d)].Add(1)
	}
}

// Summary is the traffic of one colour over a window.
type Summary struct {
	Requests       int64 `json:"requests"`
	InstanceErrors int64 `json:"instance_errors"`
	ClientErrors   int64 `json:"client_errors"`
	// Latencies is how many requests have a latency (not long-lived ones).
	Latencies int64 `json:"latencies"`
	// P50 and P99 are 0 when no latency was recorded.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
}

// ErrorRatio is InstanceErrors / Requests, 0 with no requests.
func (s Summary) ErrorRatio() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.InstanceErrors) / float64(s.Requests)
}

// HistBuckets is the number of buckets of a Histogram. Replicas that sum
// each other's histograms must agree on it (and on the bounds, which are
// fixed: 32 µs · 2^(i/4)).
const HistBuckets = histBuckets

// Histogram is the latency histogram of a window: how many requests fell
// in each bucket. Histograms of the same traffic split any way (across
// seconds, or across the replicas of a fleet) add up to the histogram of
// the whole, so a fleet's p99 is the p99 of the summed histograms.
type Histogram [histBuckets]int64

// Add adds o into h.
func (h *Histogram) Add(o *Histogram) {
	for i := range h {
		h[i] += o[i]
	}
}

// Count is how many latencies h holds.
func (h *Histogram) Count() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// Quantile is the q-quantile (0 < q <= 1) of the latencies in h, 0 when
// it is empty. It is what Window reports as P50 and P99.
func (h *Histogram) Quantile(q float64) time.Duration {
	return (*hist)(h).quantile(q, h.Count())
}

// hist accumulates histogram buckets.
type hist [histBuckets]int64

func (h *hist) quantile(q float64, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var cum int64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if float64(cum+c) >= rank {
			lo := time.Duration(0)
			if i > 0 {
				lo = bounds[i-1]
			}
			hi := bounds[i]
			if i == histBuckets-1 {
				return lo
			}
			// Interpolate within the bucket by rank.
			f := (rank - float64(cum)) / float64(c)
			return lo + time.Duration(f*float64(hi-lo))
		}
		cum += c
	}
	return bounds[histBuckets-2]
}

// add adds bucket b into sum and h.
func (sum *Summary) add(h *hist, b *bucket) {
	sum.Requests += b.requests.Load()
	sum.InstanceErrors += b.instErrs.Load()
	sum.ClientErrors += b.cliErrs.Load()
	for i := range b.hist {
		c := int64(b.hist[i].Load())
		h[i] += c
		sum.Latencies += c
	}
}

func (sum *Summary) finish(h *hist) {
	sum.P50 = h.quantile(0.50, sum.Latencies)
	sum.P99 = h.quantile(0.99, sum.Latencies)
}

// Window sums a colour's traffic from since (whole seconds, inclusive) up to
// now, at most Span back. An unknown colour gives the zero Summary.
func (r *Recorder) Window(color string, since time.Time) Summary {
	sum, _ := r.WindowHistogram(color, since)
	return sum
}

// WindowHistogram is Window together with the window's latency histogram,
// which a fleet sums across replicas (see Histogram).
func (r *Recorder) WindowHistogram(color string, since time.Time) (Summary, Histogram) {
	var sum Summary
	var h hist
	s := r.series(color)
	if s == nil {
		return sum, Histogram(h)
	}
	now := r.now().Unix()
	from := max(since.Unix(), now-Slots+1)
	for sec := from; sec <= now; sec++ {
		b := &s.buckets[uint64(sec)%Slots]
		if b.sec.Load() == sec {
			sum.add(&h, b)
		}
	}
	sum.finish(&h)
	return sum, Histogram(h)
}

// Point is one step of a Series: the traffic of [Time, Time+step).
type Point struct {
	Time time.Time `json:"t"`
	Summary
}

// Series cuts a colour's whole retained history (Span up to now) into steps
// of step (rounded to whole seconds, at least 1 s), oldest first; the last
// point holds the current, unfinished second(s). Steps are aligned to
// multiples of step since the Unix epoch. An unknown colour gives nil.
func (r *Recorder) Series(color string, step time.Duration) []Point {
	s := r.series(color)
	if s == nil {
		return nil
	}
	st := max(int64(step/time.Second), 1)
	now := r.now().Unix()
	first := now - Slots + 1
	start := first - first%st
	if start < first {
		start += st
	}
	out := make([]Point, 0, (now-start)/st+1)
	for t := start; t <= now; t += st {
		p := Point{Time: time.Unix(t, 0).UTC()}
		var h hist
		for sec := t; sec < t+st && sec <= now; sec++ {
			b := &s.buckets[uint64(sec)%Slots]
			if b.sec.Load() == sec {
				p.add(&h, b)
			}
		}
		p.finish(&h)
		out = append(out, p)
	}
	return out
}
