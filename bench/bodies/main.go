// Command bodies is the backend and the client of the large-body benchmark
// (bench/bodies.sh).
//
//	bodies serve -addr 127.0.0.1:18101 -file /tmp/x/body   # the backend
//	bodies get -addr 127.0.0.1:18180 -n BYTES              # one download
//	bodies put -addr 127.0.0.1:18180 -file /tmp/x/body     # one upload
//
// The backend answers GET /file with the file (Content-Length, written with
// sendfile(2) by net/http), reads and discards the body of PUT /upload with
// a 1 MiB buffer and answers how many bytes it read, and answers anything
// else with "ok". The client speaks HTTP/1.1 on a raw TCP connection so it
// costs as little as possible: a download is read with 1 MiB reads, an
// upload is sent from the file with sendfile(2). With -cc, every connection
// of the process (served or dialled) runs that congestion control. It prints
// "bytes seconds GB/s" and fails unless the status is 200 and every byte
// arrived.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cryoprotect/bluegreen/bench/internal/tcpcc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bodies serve|get|put [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18101", "listen (serve) or connect (get, put) address")
	file := fs.String("file", "", "the body file (serve: what GET /file answers; put: what is uploaded)")
	n := fs.Int64("n", 0, "get: the bytes expected")
	cc := fs.String("cc", "", "TCP congestion control of the connections (TCP_CONGESTION; default: the system's)")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(*addr, *file, *cc)
	case "get":
		err = get(*addr, *n, *cc)
	case "put":
		err = put(*addr, *file, *cc)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bodies:", err)
		os.Exit(1)
	}
}

func serve(addr, file, cc string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/file":
			f, err := os.Open(file)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer f.Close()
			st, _ := f.Stat()
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
			_, _ = io.Copy(w, f) // the response's ReadFrom: sendfile
		case "/upload":
			buf := make([]byte, 1<<20)
			var total int64
			for {
				k, err := r.Body.Read(buf)
				total += int64(k)
				if err != nil {
					break
				}
			}
			_, _ = fmt.Fprintln(w, total)
		default:
			_, _ = io.WriteString(w, "ok\n")
		}
	})
	srv := &http.Server{Handler: h}
	if cc != "" {
		srv.ConnState = func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				if err := tcpcc.Set(c.(*net.TCPConn), cc); err != nil {
					fmt.Fprintln(os.Stderr, "bodies:", err)
					_ = c.Close()
				}
			}
		}
	}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
	return nil
}

// report prints bytes, seconds and GB/s (10^9 bytes a second).
func report(n int64, d time.Duration) {
	fmt.Printf("%d %.3f %.3f\n", n, d.Seconds(), float64(n)/d.Seconds()/1e9)
}

// dial connects to addr, with cc as its congestion control unless empty.
func dial(addr, cc string) (*net.TCPConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	if cc != "" {
		if err := tcpcc.Set(tc, cc); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return tc, nil
}

func get(addr string, want int64, cc string) error {
	c, err := dial(addr, cc)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET /file HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 || res.ContentLength != want {
		return fmt.Errorf("status %d, Content-Length %d; want 200, %d", res.StatusCode, res.ContentLength, want)
	}
	// What bufio holds first, then straight from the socket.
	got, _ := br.Discard(min(br.Buffered(), int(want)))
	total := int64(got)
	buf := make([]byte, 1<<20)
	for total < want {
		k, err := c.Read(buf[:min(int64(len(buf)), want-total)])
		total += int64(k)
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", total, want, err)
		}
	}
	report(total, time.Since(start))
	return nil
}

func put(addr, file, cc string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	c, err := dial(addr, cc)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "PUT /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n", st.Size()); err != nil {
		return err
	}
	sent, err := c.ReadFrom(f) // sendfile
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", sent, err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(res.Body)
	got, _ := strconv.ParseInt(string(trimNL(body)), 10, 64)
	if res.StatusCode != 200 || got != st.Size() {
		return errors.New("status " + res.Status + ", the backend read " + string(trimNL(body)) + " bytes of " + strconv.FormatInt(st.Size(), 10))
	}
	report(sent, time.Since(start))
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
