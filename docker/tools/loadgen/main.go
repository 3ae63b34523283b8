// Command loadgen sends a steady stream of GET requests to a URL until it is
// stopped (SIGINT or SIGTERM) or its duration ends, then prints one JSON line:
// how many requests were sent, how many failed (transport errors and non-2xx
// answers), how many each colour answered (X-Deployment-Color), and the
// order in which the colours took over ("sequence"; answers of the old colour
// to requests sent before the new one was first seen are "overlap").
//
//	go run ./docker/tools/loadgen -url http://127.0.0.1:8080/ -rate 200 -c 8
//
// It exits 1 when any request failed, 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"
)

type summary struct {
	URL       string         `json:"url"`
	Seconds   float64        `json:"seconds"`
	Requests  int            `json:"requests"`
	Failed    int            `json:"failed"`
	Errors    map[string]int `json:"errors,omitempty"`
	Colors    map[string]int `json:"colors"`
	Sequence  []string       `json:"sequence"`
	Overlap   int            `json:"overlap"`
	FirstFail string         `json:"first_failure,omitempty"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/", "URL to GET")
	conc := flag.Int("c", 8, "concurrent clients")
	rate := flag.Float64("rate", 200, "requests per second, all clients together (0: as fast as possible)")
	dur := flag.Duration("d", 0, "stop after this duration (0: run until SIGINT or SIGTERM)")
	timeout := flag.Duration("timeout", 10*time.Second, "timeout of one request")
	out := flag.String("o", "", "also write the summary to this file")
	flag.Parse()
	if *conc < 1 || *rate < 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}

	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: *conc, IdleConnTimeout: 30 * time.Second},
	}
	var (
		mu sync.Mutex
		s  = summary{URL: *url, Errors: map[string]int{}, Colors: map[string]int{}}
		// When the last colour in Sequence was first received.
		changed time.Time
	)
	record := func(sent time.Time, color, failure string) {
		mu.Lock()
		defer mu.Unlock()
		s.Requests++
		if failure != "" {
			s.Failed++
			s.Errors[failure]++
			if s.FirstFail == "" {
				s.FirstFail = time.Now().UTC().Format(time.RFC3339Nano) + " " + failure
			}
			return
		}
		s.Colors[color]++
		// The order in which colours answered, collapsed: [blue green blue].
		// With several clients, an answer from the old colour to a request
		// sent before the new colour was first seen can arrive after it: the
		// proxy routed that request before the switch. It is counted as
		// overlap, not as a switch back. An old colour answering a request
		// sent after the new one was seen is a switch back.
		n := len(s.Sequence)
		switch {
		case n > 0 && s.Sequence[n-1] == color:
		case n > 0 && sent.Before(changed):
			s.Overlap++
		case n < 100:
			s.Sequence = append(s.Sequence, color)
			changed = time.Now()
		}
	}

	var every time.Duration
	if *rate > 0 {
		every = time.Duration(float64(*conc) / *rate * float64(time.Second))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				t := time.Now()
				// A request in flight when the run ends is finished, not cut.
				req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, *url, nil)
				if err != nil {
					record(t, "", err.Error())
					return
				}
				resp, err := client.Do(req)
				switch {
				case err != nil:
					record(t, "", "transport: "+err.Error())
				default:
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					color := resp.Header.Get("X-Deployment-Color")
					switch {
					case err != nil:
						record(t, "", "body: "+err.Error())
					case resp.StatusCode/100 != 2:
						record(t, "", fmt.Sprintf("HTTP %d from %q", resp.StatusCode, color))
					default:
						record(t, color, "")
					}
				}
				if every > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(every - time.Since(t)):
					}
				}
			}
		})
	}
	wg.Wait()
	s.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
	if len(s.Errors) > 20 { // keep the line readable: the most frequent only
		type kv struct {
			k string
			v int
		}
		var all []kv
		for k, v := range s.Errors {
			all = append(all, kv{k, v})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
		s.Errors = map[string]int{}
		for _, e := range all[:20] {
			s.Errors[e.k] = e.v
		}
	}
	b, _ := json.Marshal(s)
	fmt.Println(string(b))
	if *out != "" {
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
		}
	}
	if s.Failed > 0 {
		os.Exit(1)
	}
}
