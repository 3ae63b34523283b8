package testkit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// Load runs concurrent clients that each call Do in a loop, and counts the
// calls and the failures (Do returning an error). Start it with StartLoad.
type Load struct {
	Sent, Failed atomic.Int64
	firstErr     atomic.Pointer[error]
	wg           sync.WaitGroup
}

// StartLoad starts clients goroutines; each calls do perClient times, or
// until ctx ends when perClient is 0. do gets the client's index (0 to
// clients-1) and the 1-based number of the call across all clients. Wait
// for the end with Wait.
func StartLoad(ctx context.Context, clients, perClient int, do func(client int, n int64) error) *Load {
	l := &Load{}
	for c := range clients {
		l.wg.Go(func() {
			for i := 0; (perClient == 0 || i < perClient) && ctx.Err() == nil; i++ {
				if err := do(c, l.Sent.Add(1)); err != nil {
					l.Failed.Add(1)
					l.firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	return l
}

// Wait waits until every client has stopped.
func (l *Load) Wait() { l.wg.Wait() }

// FirstErr is the first failure, or nil.
func (l *Load) FirstErr() error {
	if p := l.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Get sends GET url with c, reads the whole answer and returns its header;
// an answer other than 200 is an error.
func Get(c *http.Client, url string) (http.Header, error) {
	res, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return res.Header, fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return res.Header, nil
}

// Do sends req with c (http.DefaultClient when c is nil), reads the whole
// answer and closes its body. A transport or read error fails the test.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer to %s %s: %v", req.Method, req.URL, err)
	}
	return res, b
}
