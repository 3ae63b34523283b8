package h2

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzServeConn feeds arbitrary bytes after the connection preface to a
// connection: whatever they are, no goroutine panics and the connection
// ends when its client does.
func FuzzServeConn(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		errs := &errorCount{}
		s := &Server{Log: slog.New(errs), StallTimeout: time.Second, Handler: handlerFunc(func(st *Stream) {
			_, _ = io.Copy(io.Discard, st)
			_ = st.WriteHeaders(200, []hpack.HeaderField{{Name: "x", Value: "y"}}, []byte("ok"), true)
		})}
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); _ = s.ServeConn(server) }()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_ = client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = client.Write(append([]byte(http2.ClientPreface), in...))
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the connection did not end after its client closed")
		}
		if n := errs.n.Load(); n > 0 {
			t.Fatalf("%d errors logged (a panic)", n)
		}
	})
}

// fuzzSeeds are frame sequences: a request with a body, control frames,
// and some of the malformed ones h2spec sends.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	build := func(fn func(fr *http2.Framer, block []byte)) {
		var buf, hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "a"}, {":path", "/"}, {"content-length", "2"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		fr := http2.NewFramer(&buf, nil)
		fr.AllowIllegalWrites = true
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
		fn(fr, hb.Bytes())
		seeds = append(seeds, buf.Bytes())
	}
	build(func(fr *http2.Framer, block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("hi"))
		_ = fr.WriteWindowUpdate(1, 100)
		_ = fr.WritePing(false, [8]byte{1})
	})
	build(func(fr *http2.Framer, block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:3]})
		_ = fr.WriteContinuation(1, true, block[3:])
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WriteData(1, false, []byte("late"))
		_ = fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	})
	build(func(fr *http2.Framer, block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndHeaders: true,
			Priority: http2.PriorityParam{StreamDep: 3}})
		_ = fr.WritePriority(5, http2.PriorityParam{StreamDep: 1, Weight: 9})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true, EndStream: true})
		_ = fr.WriteWindowUpdate(0, 1<<31-1)
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1})
	})
	return seeds
}

// errorCount counts log records at error level.
type errorCount struct{ n atomic.Int64 }

func (e *errorCount) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (e *errorCount) Handle(context.Context, slog.Record) error    { e.n.Add(1); return nil }
func (e *errorCount) WithAttrs([]slog.Attr) slog.Handler           { return e }
func (e *errorCount) WithGroup(string) slog.Handler                { return e }
