package state

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		spec       string
		wantScheme string
		wantRest   string
		wantErr    string // substring; "" means success
	}{
		{"file:/tmp/x.json", "file", "/tmp/x.json", ""},
		{"file:relative/state.json", "file", "relative/state.json", ""},
		{"file:C:state", "file", "C:state", ""},
		{"etcd://h:2379/p", "etcd", "h:2379/p", ""},
		{"etcd://a:2379,b:2379/bluegreen/state", "etcd", "a:2379,b:2379/bluegreen/state", ""},
		{"file:", "", "", "empty path"},
		{"etcd://", "", "", "malformed etcd spec"},
		{"etcd:h:2379", "", "", "malformed etcd spec"},
		{"redis://x", "", "", `unknown scheme "redis"`},
		{"FILE:/tmp/x", "", "", `unknown scheme "FILE"`},
		{"/tmp/x.json", "", "", "no scheme"},
		{"", "", "", "empty spec"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			scheme, rest, err := ParseSpec(tt.spec)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSpec = %q, %q, want error containing %q", scheme, rest, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.spec+`"`) {
					t.Errorf("ParseSpec error = %q, want it to contain %q and the quoted spec", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			if scheme != tt.wantScheme || rest != tt.wantRest {
				t.Errorf("ParseSpec = %q, %q, want %q, %q", scheme, rest, tt.wantScheme, tt.wantRest)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "x.json")
	tests := []struct {
		name            string
		spec            string
		wantErr         string // substring; "" means success
		wantUnsupported bool   // error wraps ErrUnsupportedScheme
	}{
		{"file", "file:" + good, "", false},
		{"file in /tmp", "file:/tmp/x.json", "", false},
		{"file without path", "file:", "unsupported state store", false},
		{"file in missing directory", "file:" + filepath.Join(dir, "missing", "x.json"), "missing", false},
		{"etcd", "etcd://h:2379/p", "", true},
		{"redis", "redis://x", `unsupported state store "redis://x": expected file:PATH`, false},
		{"empty", "", `unsupported state store "": expected file:PATH`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := Open(tt.spec)
			if err == nil {
				defer st.Close()
			}
			if got := errors.Is(err, ErrUnsupportedScheme); got != tt.wantUnsupported {
				t.Fatalf("Open(%q) = %v; wraps ErrUnsupportedScheme: %v, want %v", tt.spec, err, got, tt.wantUnsupported)
			}
			if tt.wantUnsupported {
				return
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open(%q) error = %v, want one containing %q", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.spec, err)
			}
			if _, ok := st.(*FileStore); !ok {
				t.Errorf("Open(%q) = %T, want *FileStore", tt.spec, st)
			}
		})
	}
}
