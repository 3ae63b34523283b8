package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// frame builds one frame of Docker's multiplexed log stream.
func frame(stream byte, payload string) []byte {
	h := make([]byte, 8)
	h[0] = stream
	binary.BigEndian.PutUint32(h[4:], uint32(len(payload)))
	return append(h, payload...)
}

func TestDemuxAndParse(t *testing.T) {
	var raw bytes.Buffer
	raw.Write(frame(2, `2026-12-01T22:50:00.000000001Z {"message":"request","labels.color":"green"}`+"\n"))
	// A line split over two frames, and a plain text line on stdout.
	raw.Write(frame(2, `2026-12-01T22:50:01Z {"message":"cut`))
	raw.Write(frame(2, `over","@timestamp":"2026-12-01T22:50:01.5Z"}`+"\n"))
	raw.Write(frame(1, "2026-12-01T22:50:02Z listening on :5000\n"))
	br := bufio.NewReader(&demux{r: bufio.NewReader(&raw)})
	extra := map[string]any{"container.name": "p_bluegreen_1"}
	var docs []map[string]any
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			l, ok := parseLine(b, extra)
			if !ok {
				t.Fatalf("line not parsed: %q", b)
			}
			var m map[string]any
			if err := json.Unmarshal(l.doc, &m); err != nil {
				t.Fatal(err)
			}
			docs = append(docs, m)
		}
		if err == io.EOF {
			break
		}
	}
	if len(docs) != 3 {
		t.Fatalf("%d documents, want 3: %v", len(docs), docs)
	}
	want := []map[string]any{
		{"message": "request", "labels.color": "green", "@timestamp": "2026-12-01T22:50:00.000000001Z", "container.name": "p_bluegreen_1"},
		{"message": "cutover", "@timestamp": "2026-12-01T22:50:01.5Z"},
		{"message": "listening on :5000", "@timestamp": "2026-12-01T22:50:02Z"},
	}
	for i, w := range want {
		for k, v := range w {
			if docs[i][k] != v {
				t.Errorf("doc %d: %s = %v, want %v", i, k, docs[i][k], v)
			}
		}
	}
}

// TestSendRetriesAndContentType sends batches to a sink that fails once,
// checks the Content-Type of each format and that positions advance only
// when a batch is accepted.
func TestSendRetriesAndContentType(t *testing.T) {
	for _, format := range []string{"jsonline", "bulk"} {
		t.Run(format, func(t *testing.T) {
			var mu sync.Mutex
			var bodies []string
			var ctypes []string
			calls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 1 {
					http.Error(w, "busy", http.StatusServiceUnavailable)
					return
				}
				bodies = append(bodies, string(b))
				ctypes = append(ctypes, r.Header.Get("Content-Type"))
				io.WriteString(w, `{"errors":false,"items":[]}`)
			}))
			defer srv.Close()
			cfg := config{sink: srv.URL, format: format, index: "logs-bluegreen-default", batch: 10, flush: 50 * time.Millisecond}
			s, err := newShipper(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ts := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			done := make(chan struct{})
			go func() { s.sendLoop(ctx); close(done) }()
			for i := range 3 {
				s.lines <- line{container: "c1", ts: ts.Add(time.Duration(i) * time.Second), doc: []byte(`{"message":"m"}`)}
			}
			close(s.lines)
			<-done
			if s.sent.Load() != 3 || s.fails.Load() != 1 {
				t.Fatalf("sent %d, failed requests %d; want 3 and 1", s.sent.Load(), s.fails.Load())
			}
			if got := s.positions["c1"]; !got.Equal(ts.Add(2 * time.Second)) {
				t.Fatalf("position %v, want the last line's time", got)
			}
			mu.Lock()
			defer mu.Unlock()
			wantType := map[string]string{"jsonline": "application/stream+json", "bulk": "application/x-ndjson"}[format]
			if len(ctypes) != 1 || ctypes[0] != wantType {
				t.Fatalf("Content-Type %v, want %s", ctypes, wantType)
			}
			lines := strings.Split(strings.TrimSpace(bodies[0]), "\n")
			wantLines := map[string]int{"jsonline": 3, "bulk": 6}[format]
			if len(lines) != wantLines {
				t.Fatalf("%d lines in the body, want %d: %q", len(lines), wantLines, bodies[0])
			}
			if format == "bulk" && lines[0] != `{"create":{"_index":"logs-bluegreen-default"}}` {
				t.Fatalf("bulk action %q", lines[0])
			}
		})
	}
}
