// Command idleconns opens N keep-alive connections to a URL, sends one GET on
// each and reads the answer, then holds them all open and idle. It prints
// "ready <n> <failed>" once every connection has been tried and keeps the
// connections until it gets SIGTERM or SIGINT (or its standard input closes,
// with -stdin).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 2000, "connections to hold")
	par := flag.Int("p", 8, "connections opened at once (keeps the proxy's upstream pool small)")
	rawURL := flag.String("url", "http://127.0.0.1:8080/", "URL to request on each connection")
	useStdin := flag.Bool("stdin", false, "also exit when standard input closes")
	flag.Parse()
	u, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(2)
	}
	req := []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: idleconns\r\n\r\n")

	var (
		mu     sync.Mutex
		conns  = make([]net.Conn, 0, *n)
		failed atomic.Int64
		wg     sync.WaitGroup
		sem    = make(chan struct{}, *par)
	)
	one := func() {
		defer wg.Done()
		defer func() { <-sem }()
		c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			failed.Add(1)
			return
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			c.Close()
			failed.Add(1)
			return
		}
		br := bufio.NewReaderSize(c, 4096)
		res, err := http.ReadResponse(br, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		if err != nil || res.StatusCode != http.StatusOK || res.Close {
			c.Close()
			failed.Add(1)
			return
		}
		_ = c.SetDeadline(time.Time{})
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	for range *n {
		sem <- struct{}{}
		wg.Add(1)
		go one()
	}
	wg.Wait()
	fmt.Printf("ready %d %d\n", len(conns), failed.Load())

	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	if *useStdin {
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); ch <- syscall.SIGTERM }()
	}
	<-ch
	// Count how many the proxy closed meanwhile: a read that does not time
	// out at once means the peer sent FIN.
	closed := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				closed++
			}
		}
		c.Close()
	}
	fmt.Printf("closed-by-peer %d\n", closed)
}
