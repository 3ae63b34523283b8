package proxy

import (
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
	ResponseHeaderTimeout time.Duration // default 0: none (event streams and slow endpoints)
}

// NewTransport returns an http.Transport for the data path: keep-alive pools
// sized for proxying, no transparent compression (bodies pass through as the
// instance sent them), HTTP/1.1 to the instances, no environment proxy.
func NewTransport(cfg TransportConfig) *http.Transport {
	cfg = cfg.withDefaults()
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: h1.ExpectContinueTimeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
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
