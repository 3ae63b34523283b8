// Command backend is the upstream of the benchmark: one process listening on
// one or more loopback ports, answering every request with a fixed body of
// about 100 bytes over keep-alive connections, and 200 on /health.
// GET /conns answers how many connections it has accepted on every port so
// far: the harness counts the proxies' reconnects with it.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

func main() {
	addrs := flag.String("addrs", "127.0.0.1:18001", "comma-separated listen addresses (one per colour)")
	flag.Parse()
	var accepted atomic.Int64
	countNew := func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			accepted.Add(1)
		}
	}
	for i, a := range strings.Split(*addrs, ",") {
		// Every port answers the same length; the last byte names the port's index.
		body := []byte(fmt.Sprintf("%-99s\n", "bluegreen bench backend "+strconv.Itoa(i)))
		ln, err := net.Listen("tcp", a)
		if err != nil {
			log.Fatalf("backend: %v", err)
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/conns" {
				_, _ = fmt.Fprintln(w, accepted.Load())
				return
			}
			hd := w.Header()
			hd["Content-Type"] = []string{"text/plain"}
			hd["Content-Length"] = []string{"100"}
			_, _ = w.Write(body)
		})
		srv := &http.Server{Handler: h, IdleTimeout: 0, ConnState: countNew}
		go func() { log.Fatal(srv.Serve(ln)) }()
	}
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}
