package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
)

// A name that resolves to several addresses of one family is warned of,
// once for each change of its addresses, and again after it was scaled
// back to one; a name with one address of each family (localhost), an
// address and a name that does not resolve yet are not.
func TestScaledNamesWarned(t *testing.T) {
	var mu sync.Mutex
	answers := map[string][]string{
		"app-blue":  {"172.18.0.5", "::ffff:172.18.0.4"},
		"localhost": {"127.0.0.1", "::1"},
		"app-green": {"172.18.0.9"},
	}
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		a, ok := answers[host]
		if !ok {
			return nil, errors.New("no such host")
		}
		var out []netip.Addr
		for _, s := range a {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	}
	set := func(host string, addrs ...string) {
		mu.Lock()
		answers[host] = addrs
		mu.Unlock()
	}
	var logs testkit.Buffer
	s := &scaledNames{lookup: lookup, interval: 20 * time.Millisecond, log: slog.New(slog.NewJSONHandler(&logs, nil))}
	var urls []*url.URL
	for _, u := range []string{"http://app-blue:8080", "http://app-blue:8081", "http://localhost:8080", "http://app-green:8080", "http://10.0.0.1:80", "http://not-yet:80"} {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, pu)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx, urls) }()
	defer func() { cancel(); <-done }()

	warnings := func() []string {
		var out []string
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, "resolves to several addresses") {
				out = append(out, line)
			}
		}
		return out
	}
	waitFor := func(n int) []string {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(warnings()) < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // five more rounds: no more lines
		w := warnings()
		if len(w) != n {
			t.Fatalf("%d warnings, want %d:\n%s", len(w), n, strings.Join(w, "\n"))
		}
		return w
	}
	w := waitFor(1)
	for _, want := range []string{`"level":"WARN"`, `"host":"app-blue"`, `"addresses":["172.18.0.4","172.18.0.5"]`, `"http://app-blue:8080"`, `"http://app-blue:8081"`} {
		if !strings.Contains(w[0], want) {
			t.Errorf("warning %s lacks %s", w[0], want)
		}
	}
	set("app-green", "172.18.0.9", "172.18.0.10") // scaled later
	set("app-blue", "172.18.0.4", "172.18.0.5")   // same addresses, another order
	w = waitFor(2)
	if !strings.Contains(w[1], `"host":"app-green"`) {
		t.Errorf("second warning %s, want app-green's", w[1])
	}
	set("app-blue", "172.18.0.4") // scaled down, then up again
	time.Sleep(60 * time.Millisecond)
	set("app-blue", "172.18.0.4", "172.18.0.7")
	w = waitFor(3)
	if !strings.Contains(w[2], `"addresses":["172.18.0.4","172.18.0.7"]`) {
		t.Errorf("third warning %s, want app-blue's new addresses", w[2])
	}
}
