//go:build !noetcd

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
