package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const deadline = 5 * time.Second

// runChecker starts c.Run and returns a function that cancels it and fails
// the test unless Run returns promptly.
func runChecker(t *testing.T, c *Checker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	return func() {
		t.Helper()
		cancel()
		select {
		case <-done:
		case <-time.After(deadline):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// countingTransport counts the requests in flight through it.
type countingTransport struct {
	next     http.RoundTripper
	inflight atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	return c.next.RoundTrip(r)
}

func TestRunReportsTransitions(t *testing.T) {
	defer goleak.VerifyNone(t)
	b := startBackend(true)
	defer b.srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()

	events := make(chan event)
	quit := make(chan struct{})
	rep := ReporterFunc(func(instance string, up bool) {
		select {
		case events <- event{instance, up}:
		case <-quit:
		}
	})
	c := NewChecker("blue", []*url.URL{b.URL(t)},
		Config{Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 2},
		&http.Client{Transport: tr}, rep, nil, nil, nil)
	stop := runChecker(t, c)
	defer stop()
	defer close(quit) // before stop: a Reporter call must not block Run's exit

	expect := func(up bool) {
		t.Helper()
		select {
		case ev := <-events:
			if ev != (event{b.srv.URL, up}) {
				t.Fatalf("report %v, want %v", ev, event{b.srv.URL, up})
			}
		case <-time.After(deadline):
			t.Fatalf("no report of up=%v within %v", up, deadline)
		}
	}
	expect(true)
	b.healthy.Store(false)
	expect(false)
	b.healthy.Store(true)
	expect(true)
}

func TestRunReturnsWhileProbeInFlight(t *testing.T) {
	defer goleak.VerifyNone(t)
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}))
	defer srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ct := &countingTransport{next: tr}

	rep := &recorder{}
	c := NewChecker("green", []*url.URL{mustParse(t, srv.URL)},
		Config{Interval: 10 * time.Millisecond, Timeout: time.Minute},
		&http.Client{Transport: ct}, rep, nil, nil, nil)
	stop := runChecker(t, c)
	select {
	case <-entered:
	case <-time.After(deadline):
		t.Fatal("no probe reached the backend")
	}
	stop()
	if n := ct.inflight.Load(); n != 0 {
		t.Errorf("%d probes still in flight after Run returned", n)
	}
	if ev := rep.take(); len(ev) != 0 || c.Ready() {
		t.Errorf("a probe cut short by shutdown was counted: reports %v, status %+v", ev, c.Status())
	}
}

func TestRunCanceledBeforeStart(t *testing.T) {
	defer goleak.VerifyNone(t)
	b := startBackend(true)
	defer b.srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := NewChecker("blue", []*url.URL{b.URL(t)}, Config{Interval: 10 * time.Millisecond}, nil, nil, nil, nil, nil)
	c.Run(ctx)
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend saw %d probes after cancel", n)
	}
}
