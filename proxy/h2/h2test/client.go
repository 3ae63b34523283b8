// Package h2test is a raw HTTP/2 client for tests of servers: it writes
// frames as given (malformed ones too) and reads what comes back.
package h2test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Client is one raw HTTP/2 client connection.
type Client struct {
	Conn net.Conn
	Fr   *http2.Framer
	Enc  *hpack.Encoder // writes into HB
	HB   bytes.Buffer
}

// New starts a client on nc (closed at the test's end) with a 10 s
// deadline; with preface, it sends the connection preface and a SETTINGS
// frame of settings.
func New(t testing.TB, nc net.Conn, preface bool, settings ...http2.Setting) *Client {
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &Client{Conn: nc, Fr: http2.NewFramer(nc, nc)}
	c.Fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.Enc = hpack.NewEncoder(&c.HB)
	if preface {
		_, _ = io.WriteString(nc, http2.ClientPreface)
		_ = c.Fr.WriteSettings(settings...)
	}
	return c
}

// Headers encodes a GET request's header block for path, with extra
// fields (name, value, ...).
func (c *Client) Headers(path string, extra ...string) []byte {
	c.HB.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "test"}, {":path", path}} {
		_ = c.Enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		_ = c.Enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return append([]byte(nil), c.HB.Bytes()...)
}

// Request sends a GET for path on stream id, ending the stream when end.
func (c *Client) Request(id uint32, path string, end bool, extra ...string) {
	_ = c.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.Headers(path, extra...), EndStream: end, EndHeaders: true})
}

// Until reads frames, acknowledging the server's SETTINGS, until match
// accepts one (true) or the connection ends (false); it returns the last
// GOAWAY seen. A nil match reads to the end.
func (c *Client) Until(match func(http2.Frame) bool) (bool, *http2.GoAwayFrame) {
	var ga *http2.GoAwayFrame
	for {
		f, err := c.Fr.ReadFrame()
		if err != nil {
			return false, ga
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			cp := *g
			ga = &cp
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = c.Fr.WriteSettingsAck()
			continue
		}
		if match != nil && match(f) {
			return true, ga
		}
	}
}

// GoAwayCode reads until the connection ends and returns the last GOAWAY's
// code, -1 when none came.
func (c *Client) GoAwayCode() int {
	_, ga := c.Until(nil)
	if ga == nil {
		return -1
	}
	return int(ga.ErrCode)
}

// Next returns the next frame of stream id, or a GOAWAY; nil when the
// connection ends first.
func (c *Client) Next(id uint32) http2.Frame {
	var got http2.Frame
	c.Until(func(f http2.Frame) bool {
		_, ga := f.(*http2.GoAwayFrame)
		if ga || f.Header().StreamID == id {
			got = f
			return true
		}
		return false
	})
	return got
}

// Reset reads until stream id is reset and returns the code; -1 when the
// connection ends or goes away first.
func (c *Client) Reset(id uint32) int {
	for {
		switch f := c.Next(id).(type) {
		case *http2.RSTStreamFrame:
			return int(f.ErrCode)
		case nil, *http2.GoAwayFrame:
			return -1
		}
	}
}
