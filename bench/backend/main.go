// Command backend is the upstream of the benchmark: one process listening on
// one or more loopback ports, answering every request with a fixed body of
// about 100 bytes over keep-alive connections, and 200 on /health.
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
	"syscall"
)

func main() {
	addrs := flag.String("addrs", "127.0.0.1:18001", "comma-separated listen addresses (one per colour)")
	flag.Parse()
	for i, a := range strings.Split(*addrs, ",") {
		// Every port answers the same length; the last byte names the port's index.
		body := []byte(fmt.Sprintf("%-99s\n", "bluegreen bench backend "+strconv.Itoa(i)))
		ln, err := net.Listen("tcp", a)
		if err != nil {
			log.Fatalf("backend: %v", err)
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hd := w.Header()
			hd["Content-Type"] = []string{"text/plain"}
			hd["Content-Length"] = []string{"100"}
			_, _ = w.Write(body)
		})
		srv := &http.Server{Handler: h, IdleTimeout: 0}
		go func() { log.Fatal(srv.Serve(ln)) }()
	}
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}
