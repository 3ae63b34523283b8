package proxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// TransportConfig tunes the connections from the proxy to the instances.
type TransportConfig struct {
	DialTimeout           time.Duration // default 5s
	IdleConnTimeout       time.Duration // default 30s; keep it below the instances' own keep-alive timeout
	MaxIdleConnsPerHost   int           // most idle connections kept per instance, both paths (default 1024; bluegreen serve: BLUEGREEN_UPSTREAM_MAX_CONNS): a pool smaller than the client concurrency forces new connections
	ResponseHeaderTimeout time.Duration // default 0: none (event streams and slow endpoints); also how long an instance may take no byte of a request it is sent
}

// NewTransport returns an http.Transport for the data path: keep-alive pools
// sized for proxying, no transparent compression (bodies pass through as the
// instance sent them), HTTP/1.1 to the instances, no environment proxy.
func NewTransport(cfg TransportConfig) *http.Transport {
	cfg = cfg.withDefaults()
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	dial := d.DialContext
	if stall := cfg.ResponseHeaderTimeout; stall > 0 {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &stallConn{Conn: nc, stall: stall}, nil
		}
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: h1.ExpectContinueTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		// The fast path's limit, so that a head is taken or refused
		// (502) alike on every path.
		MaxResponseHeaderBytes: h1.MaxResponseHead,
	}
}

// stallConn bounds each write to an instance by stall: an instance that
// takes no byte of a request (its body, say) for that long fails the
// write with a timeout, the instance's, as on the fast codec (h1's
// sendStall). The Transport writes at most 32 KiB at a time, so a write
// that outlasts stall means a stalled reader, not a slow one.
type stallConn struct {
	net.Conn
	stall time.Duration
}

func (c *stallConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.stall))
	return c.Conn.Write(p)
}

func (cfg TransportConfig) withDefaults() TransportConfig {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.IdleConnTimeout <= 0 {
		cfg.IdleConnTimeout = 30 * time.Second
	}
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 1024
	}
	return cfg
}

// bufferPool lends the 32 KiB copy buffers of httputil.ReverseProxy. A
// buffered channel is a free list without the allocation that boxing a slice
// into a sync.Pool costs on every Put.
type bufferPool chan []byte

const copyBufferSize = 32 << 10

func newBufferPool(n int) bufferPool { return make(bufferPool, n) }

func (p bufferPool) Get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, copyBufferSize)
	}
}

func (p bufferPool) Put(b []byte) {
	if cap(b) != copyBufferSize {
		return
	}
	select {
	case p <- b[:copyBufferSize]:
	default:
	}
}
