//go:build !noetcd

package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cryoprotect/bluegreen/internal/testkit"
	"github.com/cryoprotect/bluegreen/state/etcd/etcdtest"
)

func TestLoadConfigEtcd(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	spec := "BLUEGREEN_STATE=etcd://e1:2379,e2:2379,e3:2379/bluegreen/app"

	cfg, err := loadConfig(append(baseEnv(), spec, "BLUEGREEN_ETCD_USERNAME=bg", "BLUEGREEN_ETCD_PASSWORD_FILE="+pw), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.etcd.password != "s3cret" || cfg.EtcdTimeout != 2*time.Second || cfg.etcd.ttl != 5*time.Second {
		t.Fatalf("etcd config %+v %+v", cfg, cfg.etcd)
	}

	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"no prefix", []string{"BLUEGREEN_STATE=etcd://e1:2379"}, "BLUEGREEN_STATE="},
		{"endpoint without port", []string{"BLUEGREEN_STATE=etcd://e1/app"}, "BLUEGREEN_STATE="},
		{"missing CA file", []string{spec, "BLUEGREEN_ETCD_CA_FILE=/nonexistent/ca.pem"}, "BLUEGREEN_ETCD_CA_FILE="},
		{"cert without key", []string{spec, "BLUEGREEN_ETCD_CERT_FILE=" + pw}, "must be set together"},
		{"two passwords", []string{spec, "BLUEGREEN_ETCD_USERNAME=u", "BLUEGREEN_ETCD_PASSWORD=x", "BLUEGREEN_ETCD_PASSWORD_FILE=" + pw}, "both set"},
		{"empty password file", []string{spec, "BLUEGREEN_ETCD_USERNAME=u", "BLUEGREEN_ETCD_PASSWORD_FILE=" + empty}, "is empty"},
		{"password without user", []string{spec, "BLUEGREEN_ETCD_PASSWORD=x"}, "without BLUEGREEN_ETCD_USERNAME"},
		{"zero timeout", []string{spec, "BLUEGREEN_ETCD_TIMEOUT=0s"}, "BLUEGREEN_ETCD_TIMEOUT="},
		{"short lease", []string{spec, "BLUEGREEN_ETCD_LEASE_TTL=100ms"}, "BLUEGREEN_ETCD_LEASE_TTL="},
		{"cache in a missing directory", []string{spec, "BLUEGREEN_STATE_CACHE=/nonexistent/dir/cache.json"}, "BLUEGREEN_STATE_CACHE="},
		{"migrate from etcd", []string{spec, "BLUEGREEN_STATE_MIGRATE_FROM=etcd://e1:2379/x"}, "BLUEGREEN_STATE_MIGRATE_FROM="},
		{"migrate from a missing directory", []string{spec, "BLUEGREEN_STATE_MIGRATE_FROM=file:/nonexistent/dir/s.json"}, "BLUEGREEN_STATE_MIGRATE_FROM="},
		{"negative start wait", []string{spec, "BLUEGREEN_ETCD_START_WAIT=-1s"}, "BLUEGREEN_ETCD_START_WAIT="},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(append(baseEnv(), tc.env...), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestServeFileStoreStatus checks the store field and metric of a single
// proxy on the file store.
func TestServeFileStoreStatus(t *testing.T) {
	st := startStack(t, 1, 1)
	s := st.status()
	if s.Store == nil || s.Store.Kind != "file" || !s.Store.Up || s.Store.Leader != nil {
		t.Fatalf("store status %+v", s.Store)
	}
	if v := metricValue(t, st, "bluegreen_state_store_up"); v != "1" {
		t.Fatalf("bluegreen_state_store_up = %s", v)
	}
	if v := metricValue(t, st, "bluegreen_auto_rollback_leader"); v != "1" {
		t.Fatalf("bluegreen_auto_rollback_leader = %s", v)
	}
}

// TestFleetTLSAuth runs replicas against a 3-member etcd that serves
// clients over mutual TLS with RBAC authentication, and checks that each
// kind of rejected client is a clear start-up error (exit 2).
func TestFleetTLSAuth(t *testing.T) {
	dir := t.TempDir()
	ca := etcdtest.NewCA(t, dir, "fleet")
	c := etcdtest.StartWith(t, 3, etcdtest.Options{CA: ca, Auth: &etcdtest.Auth{User: "bluegreen", Password: "pw-fleet", Prefix: "/fleet/tls"}})
	client := ca.IssueValid("bluegreen")
	pw := filepath.Join(dir, "etcd-password")
	os.WriteFile(pw, []byte("pw-fleet\n"), 0o600)
	tlsEnv := []string{
		"BLUEGREEN_ETCD_CA_FILE=" + ca.File, "BLUEGREEN_ETCD_CERT_FILE=" + client.Cert, "BLUEGREEN_ETCD_KEY_FILE=" + client.Key,
		"BLUEGREEN_ETCD_USERNAME=bluegreen", "BLUEGREEN_ETCD_PASSWORD_FILE=" + pw,
	}
	f := startFleet(t, c, "/fleet/tls", 2, tlsEnv...)
	t0 := time.Now()
	mustPost(t, f.replicas[0], "/admin/cutover", `{"to":"green"}`, 200)
	conv := f.untilAllRoute("green", t0)
	waitUntil(t, "one leader", func() bool { return len(f.leaders()) == 1 })
	for _, st := range f.replicas {
		if s := st.status(); s.Store == nil || !s.Store.Up {
			t.Fatalf("store status %+v over TLS", s.Store)
		}
	}
	t.Logf("over mutual TLS with RBAC auth: cutover applied by both replicas %s after the request", conv.Round(time.Millisecond))

	other := etcdtest.NewCA(t, dir, "other")
	foreign := other.IssueValid("foreign")
	expired := ca.Issue("expired", nil, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	wrongPw := filepath.Join(dir, "wrong-password")
	os.WriteFile(wrongPw, []byte("not-the-password\n"), 0o600)
	set := func(name, value string) []string {
		env := slices.Clone(tlsEnv)
		for i, kv := range env {
			if strings.HasPrefix(kv, name+"=") {
				env[i] = name + "=" + value
			}
		}
		return env
	}
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"wrong CA", set("BLUEGREEN_ETCD_CA_FILE", other.File), "certificate signed by unknown authority"},
		{"expired client certificate", append(set("BLUEGREEN_ETCD_CERT_FILE", expired.Cert), "BLUEGREEN_ETCD_KEY_FILE="+expired.Key), "expired at"},
		{"client certificate of another CA", append(set("BLUEGREEN_ETCD_CERT_FILE", foreign.Cert), "BLUEGREEN_ETCD_KEY_FILE="+foreign.Key), "refused the client certificate"},
		{"wrong password", set("BLUEGREEN_ETCD_PASSWORD_FILE", wrongPw), "authentication failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := append(slices.Clone(f.env), "BLUEGREEN_STATE_CACHE="+filepath.Join(t.TempDir(), "c.json"), "BLUEGREEN_ETCD_START_WAIT=1s")
			env = append(env, tc.env...)
			var stdout, stderr testkit.Buffer
			start := time.Now()
			code := run(context.Background(), nil, env, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != exitConfig || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output:\n%s\nwant exit 2 and %q", code, out, tc.want)
			}
			t.Logf("exit 2 after %s: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
		})
	}
	// Started without a quorum, with authentication: from the cache, and
	// logged in in the background once the members are back.
	t.Run("start from the cache, log in later", func(t *testing.T) {
		c.Kill(0)
		c.Kill(1)
		r := f.add("late", append(slices.Clone(tlsEnv), "BLUEGREEN_STATE_CACHE="+f.cache("r0"))...)
		if s := r.status(); s.Active != "green" || s.Store.Up {
			t.Fatalf("status %+v store %+v, want the cached green and the store down", s, s.Store)
		}
		wait := c.RestartAsync(0, 1)
		back := time.Now()
		wait()
		waitUntil(t, "the late replica to connect", func() bool { s := r.status(); return s.Store.Up })
		t.Logf("replica started from its cache without a quorum; logged in and reports the store up %s after the members were restarted", time.Since(back).Round(time.Millisecond))
		mustPost(t, r, "/admin/cutover", `{"to":"blue"}`, 200)
		f.untilAllRoute("blue", time.Now())
	})
	// The network, not the configuration: retried with backoff until
	// BLUEGREEN_ETCD_START_WAIT, then exit 1.
	t.Run("no member reachable", func(t *testing.T) {
		env := append(slices.Clone(f.env), "BLUEGREEN_STATE=etcd://"+closedAddr(t)+"/fleet/tls",
			"BLUEGREEN_STATE_CACHE="+filepath.Join(t.TempDir(), "c.json"), "BLUEGREEN_ETCD_START_WAIT=2s", "BLUEGREEN_ETCD_TIMEOUT=300ms")
		var stdout, stderr testkit.Buffer
		start := time.Now()
		code := run(context.Background(), nil, env, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != exitFailure || !strings.Contains(out, "no cached state") || strings.Count(out, "waiting for it before serving") < 2 {
			t.Fatalf("exit %d, output:\n%s\nwant retries, then exit 1 naming the missing cache", code, out)
		}
		t.Logf("exit 1 after %s of retries: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// closedAddr is a loopback address where nothing listens: connecting to it
// is refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
