package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestClientHealthcheckFromAdminListen: without BLUEGREEN_ADMIN_URL the
// healthcheck probes the admin listener named by BLUEGREEN_ADMIN_LISTEN, a
// wildcard host turned into loopback; BLUEGREEN_ADMIN_URL still wins.
func TestClientHealthcheckFromAdminListen(t *testing.T) {
	fx := newAdminFixture(t, "")
	_, port, err := net.SplitHostPort(fx.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, listen := range []string{"127.0.0.1:" + port, "0.0.0.0:" + port, ":" + port} {
		wantCode(t, runClientT(t, map[string]string{"BLUEGREEN_ADMIN_LISTEN": listen}, "healthcheck"), clientExitOK)
	}
	fx.ready.Store(false)
	r := runClientT(t, map[string]string{"BLUEGREEN_ADMIN_LISTEN": "0.0.0.0:" + port}, "healthcheck")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "/readyz answered 503")
	fx.ready.Store(true)

	// BLUEGREEN_ADMIN_URL wins over the listen address.
	r = runClientT(t, map[string]string{"BLUEGREEN_ADMIN_LISTEN": "0.0.0.0:" + port, envAdminURL: closedURL(t)}, "healthcheck")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "cannot reach")

	// A listen address that is not host:port: exit 1 (never 2), naming it.
	r = runClientT(t, map[string]string{"BLUEGREEN_ADMIN_LISTEN": "8081"}, "healthcheck")
	wantCode(t, r, clientExitFailed)
	wantContains(t, "stderr", r.stderr, "BLUEGREEN_ADMIN_LISTEN")

	// The IPv6 wildcard becomes [::1].
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback here (%v): the [::] case is covered by adminclient's TestHealthURLFromEnv", err)
		return
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	_, port6, _ := net.SplitHostPort(ln.Addr().String())
	wantCode(t, runClientT(t, map[string]string{"BLUEGREEN_ADMIN_LISTEN": "[::]:" + port6}, "healthcheck"), clientExitOK)
}
