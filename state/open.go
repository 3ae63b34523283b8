package state

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsupportedScheme reports a valid store spec whose scheme this package
// does not open itself (etcd). A caller that links an opener for that scheme
// checks errors.Is(err, ErrUnsupportedScheme) and hands the spec to it.
var ErrUnsupportedScheme = errors.New("state: scheme has no built-in opener")

// ParseSpec splits a state store spec into its scheme and the rest.
//
//	file:PATH                  -> "file", PATH
//	etcd://ENDPOINTS/KEY       -> "etcd", "ENDPOINTS/KEY"
//
// It fails for an empty spec, any other scheme, an empty PATH, and an etcd
// spec without "//" or with nothing after it. It does not look at the file
// system or the network.
func ParseSpec(spec string) (scheme, rest string, err error) {
	scheme, rest, err = parseSpec(spec)
	if err != nil {
		return "", "", fmt.Errorf("state: state store %q: %w", spec, err)
	}
	return scheme, rest, nil
}

// parseSpec is ParseSpec with errors that do not repeat the spec.
func parseSpec(spec string) (scheme, rest string, err error) {
	if spec == "" {
		return "", "", errors.New("empty spec (want file:PATH or etcd://ENDPOINTS/KEY)")
	}
	scheme, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return "", "", errors.New("no scheme (want file:PATH or etcd://ENDPOINTS/KEY)")
	}
	switch scheme {
	case "file":
		if rest == "" {
			return "", "", errors.New("empty path (want file:PATH)")
		}
		return scheme, rest, nil
	case "etcd":
		after, ok := strings.CutPrefix(rest, "//")
		if !ok || after == "" {
			return "", "", errors.New("malformed etcd spec (want etcd://ENDPOINTS/KEY)")
		}
		return scheme, after, nil
	default:
		return "", "", fmt.Errorf("unknown scheme %q (want file or etcd)", scheme)
	}
}

// Open opens the store named by spec (see ParseSpec). "file:PATH" returns a
// FileStore that holds the file (FileStore.Lock). A valid "etcd://..."
// spec returns an error wrapping ErrUnsupportedScheme, for the caller to
// open with the etcd sub-package. Anything else is an error naming the
// spec.
func Open(spec string) (Store, error) {
	scheme, rest, err := parseSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("unsupported state store %q: expected file:PATH: %w", spec, err)
	}
	switch scheme {
	case "file":
		st, err := NewFileStore(rest)
		if err == nil {
			err = st.Lock()
		}
		if err != nil {
			return nil, fmt.Errorf("open state store %q: %w", spec, err)
		}
		return st, nil
	default:
		return nil, fmt.Errorf("open state store %q: %w", spec, ErrUnsupportedScheme)
	}
}
