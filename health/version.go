package health

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// maxVersionLen bounds a reported version.
const maxVersionLen = 64

// VersionSource says where a probe's answer carries the instance's version.
// The zero value reads none.
type VersionSource struct {
	header string // canonical header name, or ""
	field  string // top-level JSON field, or ""
}

// ParseVersionSource parses "header:NAME", "json:FIELD" or "" (none).
func ParseVersionSource(s string) (VersionSource, error) {
	if s == "" {
		return VersionSource{}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return VersionSource{}, fmt.Errorf("expected header:NAME or json:FIELD, got %q", s)
	}
	switch kind {
	case "header":
		return VersionSource{header: http.CanonicalHeaderKey(name)}, nil
	case "json":
		return VersionSource{field: name}, nil
	}
	return VersionSource{}, fmt.Errorf("expected header:NAME or json:FIELD, got %q", s)
}

func (v VersionSource) set() bool { return v.header != "" || v.field != "" }

// read returns the version in a passing probe's answer, or "" when it has
// none (a body that is not JSON, a field that is missing).
func (v VersionSource) read(h http.Header, body []byte) string {
	var out string
	if v.header != "" {
		out = h.Get(v.header)
	} else {
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			return ""
		}
		raw, ok := m[v.field]
		if !ok {
			return ""
		}
		if json.Unmarshal(raw, &out) != nil {
			out = string(raw) // a number, say
		}
	}
	out = strings.TrimSpace(out)
	if len(out) > maxVersionLen {
		out = strings.ToValidUTF8(out[:maxVersionLen], "")
	}
	return out
}
