package h1

import (
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(tb testing.TB) (a, b *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	acc := <-ch
	if acc == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { d.Close(); acc.Close() })
	return d.(*net.TCPConn), acc.(*net.TCPConn)
}

// BenchmarkRelayLength relays Content-Length bodies of several sizes from
// an instance socket to a client socket, by copy (copyN through the 16 KiB
// read buffer) and by splice (copyLength above spliceMin): where splice
// starts to pay is where spliceMin belongs. "+limit" arms the body-stall
// limit's read deadline around each read, as a relay does by default.
//
//	go test -run '^$' -bench RelayLength -benchtime 2000x ./proxy/h1
func BenchmarkRelayLength(b *testing.B) {
	for _, size := range []int{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 8 << 20} {
		for _, mode := range []string{"copy", "splice", "copy+limit", "splice+limit"} {
			b.Run(mode+"/"+strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
				instSide, upSide := tcpPair(b)     // the instance writes, the proxy reads
				clientSide, downSide := tcpPair(b) // the proxy writes, the client reads
				var bufs Buffers
				uc := &UpConn{nc: upSide}
				if strings.HasSuffix(mode, "+limit") {
					uc.stall = time.Minute // a read deadline around each read (BodyStall)
				}
				uc.cr = newConnReader(upSide, func() []byte { return bufs.upstream.get()[:] }, func(p []byte) { bufs.upstream.put((*upstreamBuf)(p)) })
				c := &Conn{nc: downSide}
				c.out.nc = downSide
				c.out.b = make([]byte, 0, clientBufSize)
				payload := make([]byte, size)
				go func() {
					for range b.N {
						if _, err := instSide.Write(payload); err != nil {
							return
						}
					}
				}()
				done := make(chan error, 1)
				go func() {
					done <- discardN(clientSide, int64(size)*int64(b.N))
				}()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					var err error
					if strings.HasPrefix(mode, "copy") {
						err = c.copyN(uc, int64(size))
					} else if sp := newSplicer(upSide, downSide); sp != nil {
						// The whole body by splice, nothing buffered first.
						err = c.spliceOut(uc, sp, int64(size))
						sp.close()
					} else {
						b.Skip("no splice here")
					}
					c.out.flush()
					if err != nil || c.out.err != nil {
						b.Fatal(err, c.out.err)
					}
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// discardN reads n bytes from c with a large buffer (io.Discard reads 8
// KiB at a time, which would measure the reader).
func discardN(c net.Conn, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := c.Read(buf[:min(n, int64(len(buf)))])
		n -= int64(k)
		if err != nil {
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// TestSpliceOnlyPlainTCP: only two plain TCP connections are spliced; a
// TLS connection, or any wrapper around a TCP connection, must see its
// bytes and keeps the copy.
func TestSpliceOnlyPlainTCP(t *testing.T) {
	a, b := tcpPair(t)
	sp := newSplicer(a, b)
	if (sp != nil) != (runtime.GOOS == "linux") {
		t.Fatalf("two TCP connections on %s: splicer %v", runtime.GOOS, sp != nil)
	}
	if sp != nil {
		sp.close()
	}
	type wrapped struct{ *net.TCPConn }
	for name, nc := range map[string]net.Conn{
		"tls":     tls.Client(a, &tls.Config{InsecureSkipVerify: true}),
		"wrapper": wrapped{a},
	} {
		if newSplicer(nc, b) != nil || newSplicer(b, nc) != nil {
			t.Errorf("%s: spliced", name)
		}
	}
}
