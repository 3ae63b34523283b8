package main

import (
	"reflect"
	"slices"
	"strings"

	"github.com/cryoprotect/bluegreen/internal/adminclient"
)

// otherVariables are BLUEGREEN_ names that are not settings of the proxy
// but are read by something else in the repository: the client commands
// (adminclient), the compose files (image, tag, limits, port, project)
// and the tests (UI_ARTIFACTS). They draw no warning.
var otherVariables = []string{
	strings.TrimPrefix(adminclient.EnvURL, envPrefix),
	"IMAGE", "TAG", "CPUS", "MEMORY", "MEMORY_RESERVATION", "PUBLIC_PORT", "COMPOSE_PROJECT", "WATCH",
	"UI_ARTIFACTS",
}

// unknownVariable is a BLUEGREEN_ variable that nothing reads, and the
// setting it most likely misspells.
type unknownVariable struct {
	name, suggest string
}

// unknownVariables lists, in name order, the BLUEGREEN_ variables of vars
// that are neither a setting of Config nor one of otherVariables: a
// misspelt setting (BLUEGREEN_DRAIN_TIMOUT) would otherwise leave its
// default in force without a word.
func unknownVariables(vars map[string]string) []unknownVariable {
	var settings []string
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if tag, ok := t.Field(i).Tag.Lookup("env"); ok {
			name, _, _ := strings.Cut(tag, ",")
			settings = append(settings, name)
		}
	}
	var out []unknownVariable
	for k := range vars {
		name, ok := strings.CutPrefix(k, envPrefix)
		if !ok || slices.Contains(settings, name) || slices.Contains(otherVariables, name) {
			continue
		}
		u := unknownVariable{name: k}
		best := len(name)/4 + 1 // at most about one edit in four
		for _, s := range settings {
			if d := editDistance(name, s); d <= best {
				best, u.suggest = d, envPrefix+s
			}
		}
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b unknownVariable) int { return strings.Compare(a.name, b.name) })
	return out
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
