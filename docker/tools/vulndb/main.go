// Command vulndb turns the OSV files of the golang.org/x/vulndb module
// (data/osv/*.json) into a Go vulnerability database that govulncheck reads
// offline with -db file:///path:
//
//	index/db.json       {"modified": <newest entry's modified time>}
//	index/modules.json  [{"path", "vulns": [{"id", "modified", "fixed"}]}], sorted
//	ID/<id>.json        each OSV entry as is
//
// This is the layout of https://go.dev/security/vuln/database#api (v1, without
// the .gz copies that only an HTTP server needs).
//
//	go run ./docker/tools/vulndb -osv "$(go mod download -json golang.org/x/vulndb@<version> | jq -r .Dir)/data/osv" -out /tmp/vulndb
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// entry is the part of an OSV entry the index needs.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string `json:"type"`
			Events []struct {
				Introduced string `json:"introduced,omitempty"`
				Fixed      string `json:"fixed,omitempty"`
			} `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

type dbMeta struct {
	Modified time.Time `json:"modified"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

func main() {
	osvDir := flag.String("osv", "", "directory of OSV entries (<ID>.json), e.g. the vulndb module's data/osv")
	out := flag.String("out", "", "directory to write the database to (created; its ID and index are replaced)")
	modified := flag.String("modified", "", "RFC 3339 time for index/db.json when no entry has a modification time\n(the vulndb repository's files carry none; use the module version's time)")
	flag.Parse()
	var fallback time.Time
	if *modified != "" {
		t, err := time.Parse(time.RFC3339, *modified)
		if err != nil {
			fmt.Fprintln(os.Stderr, "vulndb: -modified:", err)
			os.Exit(2)
		}
		fallback = t.UTC()
	}
	if *osvDir == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: vulndb -osv DIR -out DIR [-modified TIME]")
		os.Exit(2)
	}
	n, mods, err := build(*osvDir, *out, fallback)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
	fmt.Printf("vulndb: %d entries, %d modules -> %s\n", n, mods, *out)
}

func build(osvDir, out string, fallback time.Time) (entries, modules int, err error) {
	files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return 0, 0, err
	}
	if len(files) == 0 {
		return 0, 0, fmt.Errorf("no OSV entries (*.json) in %s", osvDir)
	}
	for _, d := range []string{"ID", "index"} {
		if err := os.RemoveAll(filepath.Join(out, d)); err != nil {
			return 0, 0, err
		}
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return 0, 0, err
		}
	}

	var db dbMeta
	index := map[string]*moduleMeta{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, 0, err
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", f, err)
		}
		if e.ID == "" || filepath.Base(f) != e.ID+".json" {
			return 0, 0, fmt.Errorf("%s: an entry's file must be named <id>.json (id %q)", f, e.ID)
		}
		if e.Modified.After(db.Modified) {
			db.Modified = e.Modified
		}
		for _, a := range e.Affected {
			m := index[a.Package.Name]
			if m == nil {
				m = &moduleMeta{Path: a.Package.Name, Vulns: []moduleVuln{}}
				index[a.Package.Name] = m
			}
			v := moduleVuln{ID: e.ID, Modified: e.Modified}
			// The newest fix that no later introduction supersedes, as
			// golang.org/x/vuln computes it.
			for _, r := range a.Ranges {
				if r.Type != "SEMVER" {
					continue
				}
				for _, ev := range r.Events {
					if ev.Fixed != "" && less(v.Fixed, ev.Fixed) {
						v.Fixed = ev.Fixed
					}
				}
				for _, ev := range r.Events {
					if ev.Introduced != "" && ev.Introduced != "0" && less(v.Fixed, ev.Introduced) {
						v.Fixed = ""
						break
					}
				}
			}
			m.Vulns = append(m.Vulns, v)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(out, "ID", e.ID+".json"), compact.Bytes(), 0o644); err != nil {
			return 0, 0, err
		}
	}

	if db.Modified.IsZero() {
		db.Modified = fallback
	}
	mods := make([]*moduleMeta, 0, len(index))
	for _, m := range index {
		sort.SliceStable(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	if err := writeJSON(filepath.Join(out, "index", "modules.json"), mods); err != nil {
		return 0, 0, err
	}
	if err := writeJSON(filepath.Join(out, "index", "db.json"), db); err != nil {
		return 0, 0, err
	}
	return len(files), len(mods), nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// less reports whether semantic version a sorts before b. Versions may carry
// a "v" or "go" prefix or none; an invalid or empty version sorts before every
// valid one, as in golang.org/x/mod/semver.
func less(a, b string) bool {
	va, errA := parse(a)
	vb, errB := parse(b)
	switch {
	case errA != nil && errB != nil:
		return false
	case errA != nil:
		return true
	case errB != nil:
		return false
	}
	for i := range 3 {
		if va.num[i] != vb.num[i] {
			return va.num[i] < vb.num[i]
		}
	}
	return comparePre(va.pre, vb.pre) < 0
}

type version struct {
	num [3]uint64
	pre []string
}

func parse(s string) (version, error) {
	var v version
	s = strings.TrimPrefix(strings.TrimPrefix(s, "go"), "v")
	if s == "" {
		return v, errors.New("empty version")
	}
	s, _, _ = strings.Cut(s, "+")
	core, pre, hasPre := strings.Cut(s, "-")
	parts := strings.Split(core, ".")
	if len(parts) > 3 {
		return v, fmt.Errorf("bad version %q", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("bad version %q", s)
		}
		v.num[i] = n
	}
	if hasPre {
		if pre == "" {
			return v, fmt.Errorf("bad version %q", s)
		}
		v.pre = strings.Split(pre, ".")
	}
	return v, nil
}

// comparePre compares pre-release identifiers by the rules of SemVer 2.0: no
// pre-release sorts after any; numeric identifiers sort numerically and before
// alphanumeric ones.
func comparePre(a, b []string) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		na, errA := strconv.ParseUint(a[i], 10, 64)
		nb, errB := strconv.ParseUint(b[i], 10, 64)
		switch {
		case errA == nil && errB == nil:
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
		case errA == nil:
			return -1
		case errB == nil:
			return 1
		default:
			if c := strings.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
