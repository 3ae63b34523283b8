package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/proxy/h2/h2test"
)

// Tests of the codec itself, over plain TCP (HTTP/2 with prior
// knowledge), with handlers of their own.

type handlerFunc func(st *Stream)

func (f handlerFunc) ServeH2(st *Stream) { f(st) }

func serveTest(t *testing.T, s *Server) string {
	t.Helper()
	ln := testkit.Listen(t, func(nc net.Conn) { go s.ServeConn(nc) })
	t.Cleanup(func() {
		ln.Close()
		s.Close()
		deadline := time.Now().Add(5 * time.Second)
		for s.Conns() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, settings ...http2.Setting) *h2test.Client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return h2test.New(t, nc, true, settings...)
}

func ok(st *Stream) { _ = st.WriteHeaders(200, nil, []byte("ok"), true) }

func TestPanickingHandlerResetsItsStreamOnly(t *testing.T) {
	addr := serveTest(t, &Server{Handler: handlerFunc(func(st *Stream) {
		if st.Path == "/panic" {
			panic("handler bug")
		}
		ok(st)
	})})
	c := dial(t, addr)
	c.Request(1, "/panic", true)
	if f, isRST := c.Next(1).(*http2.RSTStreamFrame); !isRST || f.ErrCode != http2.ErrCodeInternal {
		t.Fatalf("panicking stream: %v", f)
	}
	c.Request(3, "/", true)
	if f, isHdr := c.Next(3).(*http2.MetaHeadersFrame); !isHdr || f.PseudoValue("status") != "200" {
		t.Fatalf("next stream: %v", f)
	}
}

// TestAnsweredSurvivesTheClientLeaving: a client that closes its
// connection (or resets the stream) as soon as an answer ended resets the
// stream (IsReset), but
// the answer went out whole (Answered), which the proxy counts as served,
// not as the client gone; an answer cut short by the client leaving is
// not Answered.
func TestAnsweredSurvivesTheClientLeaving(t *testing.T) {
	type seen struct{ reset, answered bool }
	got := make(chan seen, 1)
	addr := serveTest(t, &Server{Handler: handlerFunc(func(st *Stream) {
		gone := make(chan struct{})
		st.OnReset(func() { close(gone) })
		if st.Path == "/whole" {
			ok(st)
		} else {
			_ = st.WriteHeaders(200, nil, []byte("part"), false)
		}
		select {
		case <-gone:
		case <-time.After(5 * time.Second):
		}
		st.OnReset(nil)
		got <- seen{st.IsReset(), st.Answered()}
	})})
	for _, tc := range []struct {
		path  string
		leave string // how the client leaves: "close" its connection, or "reset" the stream
		want  seen
	}{
		{"/whole", "close", seen{true, true}},
		{"/whole", "reset", seen{true, true}},
		{"/part", "close", seen{true, false}},
		{"/part", "reset", seen{true, false}},
	} {
		c := dial(t, addr)
		c.Request(1, tc.path, true)
		c.Until(func(f http2.Frame) bool {
			d, isData := f.(*http2.DataFrame)
			return isData && (d.StreamEnded() || tc.path == "/part")
		})
		if tc.leave == "reset" {
			_ = c.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
		} else {
			c.Conn.Close()
		}
		if s := <-got; s != tc.want {
			t.Errorf("%s, client %s: IsReset %v Answered %v, want %v %v",
				tc.path, tc.leave, s.reset, s.answered, tc.want.reset, tc.want.answered)
		}
	}
}

func TestZeroWindowStallIsBounded(t *testing.T) {
	stalled := make(chan error, 1)
	addr := serveTest(t, &Server{StallTimeout: 200 * time.Millisecond, Handler: handlerFunc(func(st *Stream) {
		stalled <- st.WriteHeaders(200, nil, []byte(strings.Repeat("x", 100)), true)
	})})
	c := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c.Request(1, "/", true)
	if _, isHdr := c.Next(1).(*http2.MetaHeadersFrame); !isHdr {
		t.Fatal("no response head")
	}
	select {
	case err := <-stalled:
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("the write ended with %v, want ErrStalled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write still waits for window")
	}
	if f, isRST := c.Next(1).(*http2.RSTStreamFrame); !isRST {
		t.Fatalf("after the stall: %v, want RST_STREAM", f)
	}
}

func TestStreamFlowControlViolations(t *testing.T) {
	addr := serveTest(t, &Server{StreamWindow: 1000, Handler: handlerFunc(func(st *Stream) {
		switch st.Path {
		case "/read":
			_, _ = io.Copy(io.Discard, st)
		case "/hold": // reads nothing until the stream is reset
			if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
				t.Errorf("read %v, want ErrReset", err)
			}
			return
		}
		ok(st)
	})})
	c := dial(t, addr)
	// A body past the stream's window: FLOW_CONTROL_ERROR for the stream;
	// the connection goes on.
	c.Request(1, "/hold", false)
	_ = c.Fr.WriteData(1, false, make([]byte, 1500))
	if code := c.Reset(1); code != int(http2.ErrCodeFlowControl) {
		t.Fatalf("stream 1 reset with %d, want FLOW_CONTROL_ERROR", code)
	}
	// A stream window update past 2^31-1: FLOW_CONTROL_ERROR for it.
	c.Request(3, "/read", false)
	_ = c.Fr.WriteWindowUpdate(3, 1<<31-1)
	if code := c.Reset(3); code != int(http2.ErrCodeFlowControl) {
		t.Fatalf("stream 3 reset with %d, want FLOW_CONTROL_ERROR", code)
	}
	// A body that respects the window is read, and its bytes are granted
	// back as the handler consumes them.
	c.Request(5, "/read", false)
	granted := 0
	for sent := 0; sent < 5000; sent += 500 {
		for sent+500-granted > 1000 { // wait for the stream's window
			switch f := c.Next(5).(type) {
			case *http2.WindowUpdateFrame:
				granted += int(f.Increment)
			case *http2.RSTStreamFrame:
				t.Fatalf("reset: %v", f.ErrCode)
			}
		}
		_ = c.Fr.WriteData(5, sent+500 == 5000, make([]byte, 500))
	}
	for {
		if f, isHdr := c.Next(5).(*http2.MetaHeadersFrame); isHdr {
			if f.PseudoValue("status") != "200" {
				t.Fatalf("status %s", f.PseudoValue("status"))
			}
			break
		}
	}
}

// TestShutdownServesStreamsInFlight: a shutdown's first GOAWAY carries the
// largest stream id, so a stream the client opened before it read that
// GOAWAY is still served; the real last stream id follows the PING's
// acknowledgement, and the connection then closes.
func TestShutdownServesStreamsInFlight(t *testing.T) {
	s := &Server{Handler: handlerFunc(ok)}
	addr := serveTest(t, s)
	c := dial(t, addr)
	c.Request(1, "/", true)
	if f, isHdr := c.Next(1).(*http2.MetaHeadersFrame); !isHdr || f.PseudoValue("status") != "200" {
		t.Fatalf("stream 1: %v", f)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	var ping [8]byte
	found, first := c.Until(func(f http2.Frame) bool {
		p, isPing := f.(*http2.PingFrame)
		if isPing && !p.IsAck() {
			ping = p.Data
		}
		return isPing
	})
	if !found || first == nil || first.LastStreamID != 1<<31-1 || first.ErrCode != http2.ErrCodeNo {
		t.Fatalf("before the PING: GOAWAY %+v, want last stream 2^31-1, NO_ERROR", first)
	}
	// A stream opened before the client answered: served.
	c.Request(3, "/", true)
	if f, isHdr := c.Next(3).(*http2.MetaHeadersFrame); !isHdr || f.PseudoValue("status") != "200" {
		t.Fatalf("stream 3, opened after the first GOAWAY: %v", f)
	}
	_ = c.Fr.WritePing(true, ping)
	_, last := c.Until(nil)
	if last == nil || last.LastStreamID != 3 || last.ErrCode != http2.ErrCodeNo {
		t.Fatalf("the last GOAWAY: %+v, want last stream 3, NO_ERROR", last)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestFloodsOfFreeFramesAreCalmed: frames that cost the server work and the
// client nothing (CVE-2019-9518's empty DATA frames, PRIORITY and
// WINDOW_UPDATE floods) end the connection with GOAWAY ENHANCE_YOUR_CALM
// once past their budget, counted as protocol errors; the same frames
// within it, as clients send them, are served.
func TestFloodsOfFreeFramesAreCalmed(t *testing.T) {
	var errs atomic.Int32
	read := make(chan string, 1)
	s := &Server{ProtocolError: func() { errs.Add(1) }, Handler: handlerFunc(func(st *Stream) {
		switch st.Path {
		case "/read":
			b, _ := io.ReadAll(st)
			read <- string(b)
			ok(st)
		case "/big":
			_ = st.WriteHeaders(200, nil, make([]byte, 300<<10), true)
		case "/2k":
			_ = st.WriteHeaders(200, nil, make([]byte, 2<<10), true)
		default:
			ok(st)
		}
	})}
	addr := serveTest(t, s)
	// calmed: the flood sent on c since errs was before ends c.
	calmed := func(t *testing.T, c *h2test.Client, before int32) {
		t.Helper()
		if code := c.GoAwayCode(); code != int(http2.ErrCodeEnhanceYourCalm) {
			t.Fatalf("GOAWAY code %d, want ENHANCE_YOUR_CALM", code)
		}
		if errs.Load() <= before {
			t.Fatal("not counted as a protocol error")
		}
	}
	status := func(t *testing.T, c *h2test.Client, id uint32) {
		t.Helper()
		for {
			switch f := c.Next(id).(type) {
			case *http2.MetaHeadersFrame:
				if f.PseudoValue("status") != "200" {
					t.Fatalf("stream %d: status %s", id, f.PseudoValue("status"))
				}
				return
			case *http2.RSTStreamFrame, *http2.GoAwayFrame, nil:
				t.Fatalf("stream %d: %v", id, f)
			}
		}
	}

	t.Run("empty DATA within the budget", func(t *testing.T) {
		c := dial(t, addr)
		c.Request(1, "/read", false)
		for range emptyDataLimit {
			_ = c.Fr.WriteData(1, false, nil)
		}
		_ = c.Fr.WriteData(1, false, []byte("a")) // data: a new run begins
		for range emptyDataLimit {
			_ = c.Fr.WriteData(1, false, nil)
		}
		_ = c.Fr.WriteData(1, true, nil) // an empty last frame is not counted
		status(t, c, 1)
		if got := <-read; got != "a" {
			t.Fatalf("handler read %q", got)
		}
	})
	t.Run("empty DATA flood", func(t *testing.T) {
		before := errs.Load()
		c := dial(t, addr)
		c.Request(1, "/read", false)
		for range emptyDataLimit + 1 {
			_ = c.Fr.WriteData(1, false, nil)
		}
		calmed(t, c, before)
	})
	t.Run("PRIORITY within the budget", func(t *testing.T) {
		c := dial(t, addr)
		for i := range uint32(priorityPerStream) { // a priority tree built up front
			_ = c.Fr.WritePriority(1001+2*i, http2.PriorityParam{Weight: 15})
		}
		c.Request(1, "/", true)
		status(t, c, 1)
	})
	t.Run("PRIORITY flood", func(t *testing.T) {
		before := errs.Load()
		c := dial(t, addr)
		for i := range uint32(priorityPerStream + 1) {
			_ = c.Fr.WritePriority(1001+2*i, http2.PriorityParam{Weight: 15})
		}
		calmed(t, c, before)
	})
	t.Run("WINDOW_UPDATE per DATA frame", func(t *testing.T) {
		// A download past the initial windows, granted back frame by
		// frame on the stream and the connection: two updates a frame.
		c := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 16384})
		c.Request(1, "/big", true)
		got := 0
		done, ga := c.Until(func(f http2.Frame) bool {
			d, isData := f.(*http2.DataFrame)
			if !isData {
				_, isRST := f.(*http2.RSTStreamFrame)
				return isRST
			}
			got += len(d.Data())
			if n := uint32(len(d.Data())); n > 0 {
				_ = c.Fr.WriteWindowUpdate(0, n)
				_ = c.Fr.WriteWindowUpdate(1, n)
			}
			return d.StreamEnded()
		})
		if !done || ga != nil || got != 300<<10 {
			t.Fatalf("download ended=%v after %d bytes, GOAWAY %v", done, got, ga)
		}
	})
	// download reads stream 1 on c, granting back on the stream what each
	// DATA frame carried, until the stream or the connection ends.
	download := func(c *h2test.Client) (got int, ended bool, ga *http2.GoAwayFrame) {
		ended, ga = c.Until(func(f http2.Frame) bool {
			d, isData := f.(*http2.DataFrame)
			if !isData {
				_, isRST := f.(*http2.RSTStreamFrame)
				return isRST
			}
			got += len(d.Data())
			if n := uint32(len(d.Data())); n > 0 && !d.StreamEnded() {
				_ = c.Fr.WriteWindowUpdate(1, n)
			}
			return d.StreamEnded()
		})
		return got, ended, ga
	}
	t.Run("a small window granted back", func(t *testing.T) {
		// A client whose window is 100 bytes draws 100-byte frames: a
		// small answer is served.
		c := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
		c.Request(1, "/2k", true)
		if got, ended, ga := download(c); !ended || ga != nil || got != 2<<10 {
			t.Fatalf("download ended=%v after %d bytes, GOAWAY %v", ended, got, ga)
		}
	})
	t.Run("data dribble (CVE-2019-9511)", func(t *testing.T) {
		// A window of 1 byte granted back byte by byte: a frame per byte.
		before := errs.Load()
		c := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
		c.Request(1, "/big", true)
		got, ended, ga := download(c)
		if ended {
			t.Fatalf("the answer ended after %d bytes of 1-byte frames", got)
		}
		if got > dribbleLimit+1 {
			t.Fatalf("%d 1-byte frames sent, budget %d", got, dribbleLimit)
		}
		if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("after %d 1-byte frames: GOAWAY %v, want ENHANCE_YOUR_CALM", got, ga)
		}
		if errs.Load() <= before {
			t.Fatal("not counted as a protocol error")
		}
	})
	t.Run("WINDOW_UPDATE flood", func(t *testing.T) {
		before := errs.Load()
		c := dial(t, addr)
		for range updatesPerFrame + 1 {
			_ = c.Fr.WriteWindowUpdate(0, 1)
		}
		calmed(t, c, before)
	})
}

// TestHeadersOnAClosedStream: HEADERS on a stream both sides have ended is
// a connection error STREAM_CLOSED (RFC 9113 5.1), also while the
// stream's handler has not returned yet (h2spec 5.1/12 failed about one
// run in ten on that race).
func TestHeadersOnAClosedStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := serveTest(t, &Server{Handler: handlerFunc(func(st *Stream) {
		ok(st)
		<-release // answered; the handler lingers
	})})
	c := dial(t, addr)
	c.Request(1, "/", true)
	if done, _ := c.Until(func(f http2.Frame) bool {
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
	}); !done {
		t.Fatal("no end of the answer")
	}
	c.Request(1, "/", true)
	if code := c.GoAwayCode(); code != int(http2.ErrCodeStreamClosed) {
		t.Fatalf("GOAWAY code %d, want STREAM_CLOSED", code)
	}
}
