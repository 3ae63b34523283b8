package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestScratchBigHead(t *testing.T) {
	for _, n := range []int{30 << 10, 100 << 10, 2 << 20} {
		inst := newRawInstance(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ []byte) bool {
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", n)+"\r\nContent-Length: 2\r\n\r\nok")
			return err == nil
		})
		f := newFixture(t, []string{inst.URL}, []string{inst.URL}, nil)
		ff := startFast(t, f.rt, nil)
		fr := startH2(t, f.rt, nil)
		for _, u := range []string{f.front.URL, ff.url} {
			res, err := http.Get(u + "/")
			if err != nil {
				t.Logf("%d %s: %v", n, u, err)
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			t.Logf("%d %s: %s %d body=%q", n, u, res.Status, len(res.Header.Get("X-Big")), b[:min(len(b), 20)])
		}
		res, err := h2Client(t).Get(fr.url + "/")
		if err != nil {
			t.Logf("%d h2: %v", n, err)
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Logf("%d h2: %s %d body=%q", n, res.Status, len(res.Header.Get("X-Big")), b[:min(len(b), 20)])
	}
}
