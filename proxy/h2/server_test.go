package h2

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Tests of the codec itself, over plain TCP (HTTP/2 with prior
// knowledge), with handlers of their own.

type handlerFunc func(st *Stream)

func (f handlerFunc) ServeH2(st *Stream) { f(st) }

func serveTest(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go s.ServeConn(nc)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		s.Close()
		deadline := time.Now().Add(5 * time.Second)
		for s.Conns() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	})
	return ln.Addr().String()
}

type client struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dial(t *testing.T, addr string, settings ...http2.Setting) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hb)
	_, _ = io.WriteString(nc, http2.ClientPreface)
	_ = c.fr.WriteSettings(settings...)
	return c
}

func (c *client) request(id uint32, path string, end bool) {
	c.hb.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "test"}, {":path", path}} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: end, EndHeaders: true})
}

// next reads frames, acknowledging SETTINGS, until one for stream id (or
// a GOAWAY) comes.
func (c *client) next(id uint32) http2.Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = c.fr.WriteSettingsAck()
			}
			continue
		case *http2.GoAwayFrame:
			return f
		}
		if f.Header().StreamID == id {
			return f
		}
	}
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
	c.request(1, "/panic", true)
	if f, isRST := c.next(1).(*http2.RSTStreamFrame); !isRST || f.ErrCode != http2.ErrCodeInternal {
		t.Fatalf("panicking stream: %v", f)
	}
	c.request(3, "/", true)
	if f, isHdr := c.next(3).(*http2.MetaHeadersFrame); !isHdr || f.PseudoValue("status") != "200" {
		t.Fatalf("next stream: %v", f)
	}
}

func TestZeroWindowStallIsBounded(t *testing.T) {
	stalled := make(chan error, 1)
	addr := serveTest(t, &Server{StallTimeout: 200 * time.Millisecond, Handler: handlerFunc(func(st *Stream) {
		stalled <- st.WriteHeaders(200, nil, []byte(strings.Repeat("x", 100)), true)
	})})
	c := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	c.request(1, "/", true)
	if _, isHdr := c.next(1).(*http2.MetaHeadersFrame); !isHdr {
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
	if f, isRST := c.next(1).(*http2.RSTStreamFrame); !isRST {
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
	c.request(1, "/hold", false)
	_ = c.fr.WriteData(1, false, make([]byte, 1500))
	for {
		f := c.next(1)
		if rst, isRST := f.(*http2.RSTStreamFrame); isRST {
			if rst.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("RST_STREAM %v, want FLOW_CONTROL_ERROR", rst.ErrCode)
			}
			break
		}
		if _, isGA := f.(*http2.GoAwayFrame); isGA {
			t.Fatal("GOAWAY for a stream's flow-control error")
		}
	}
	// A stream window update past 2^31-1: FLOW_CONTROL_ERROR for it.
	c.request(3, "/read", false)
	_ = c.fr.WriteWindowUpdate(3, 1<<31-1)
	for {
		f := c.next(3)
		if rst, isRST := f.(*http2.RSTStreamFrame); isRST {
			if rst.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("RST_STREAM %v, want FLOW_CONTROL_ERROR", rst.ErrCode)
			}
			break
		}
	}
	// A body that respects the window is read, and its bytes are granted
	// back as the handler consumes them.
	c.request(5, "/read", false)
	granted := 0
	for sent := 0; sent < 5000; sent += 500 {
		for sent+500-granted > 1000 { // wait for the stream's window
			switch f := c.next(5).(type) {
			case *http2.WindowUpdateFrame:
				granted += int(f.Increment)
			case *http2.RSTStreamFrame:
				t.Fatalf("reset: %v", f.ErrCode)
			}
		}
		_ = c.fr.WriteData(5, sent+500 == 5000, make([]byte, 500))
	}
	for {
		if f, isHdr := c.next(5).(*http2.MetaHeadersFrame); isHdr {
			if f.PseudoValue("status") != "200" {
				t.Fatalf("status %s", f.PseudoValue("status"))
			}
			break
		}
	}
}
