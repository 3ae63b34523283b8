package adminclient

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// Environment of the admin API's clients.
const (
	EnvURL       = "BLUEGREEN_ADMIN_URL"
	EnvToken     = "BLUEGREEN_ADMIN_TOKEN"
	EnvTokenFile = "BLUEGREEN_ADMIN_TOKEN_FILE"
	// EnvListen is the proxy's own admin listener; see HealthURLFromEnv.
	EnvListen  = "BLUEGREEN_ADMIN_LISTEN"
	DefaultURL = "http://127.0.0.1:8081"
)

// URLFromEnv returns BLUEGREEN_ADMIN_URL, or DefaultURL when it is unset.
// Errors name the variable and never show a password.
func URLFromEnv(getenv func(string) string) (*url.URL, error) {
	raw := strings.TrimSpace(getenv(EnvURL))
	if raw == "" {
		raw = DefaultURL
	}
	return parseURL(raw)
}

func parseURL(raw string) (*url.URL, error) {
	shown := fmt.Sprintf(" %q", raw)
	if strings.Contains(raw, "@") {
		shown = "" // may carry a password
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s%s is not a valid URL (%v): expected an http:// or https:// URL such as %s", EnvURL, shown, err, DefaultURL)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s%s is not valid: expected an http:// or https:// URL with a host, such as %s", EnvURL, shown, DefaultURL)
	}
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// HealthURLFromEnv is the base URL a process uses to check the proxy that
// runs beside it (the Docker HEALTHCHECK): BLUEGREEN_ADMIN_URL when set,
// otherwise derived from BLUEGREEN_ADMIN_LISTEN, the address the proxy's
// admin listener binds, with a wildcard or empty host replaced by loopback
// (127.0.0.1, or [::1] for "::"), otherwise DefaultURL.
func HealthURLFromEnv(getenv func(string) string) (*url.URL, error) {
	if strings.TrimSpace(getenv(EnvURL)) != "" {
		return URLFromEnv(getenv)
	}
	listen := strings.TrimSpace(getenv(EnvListen))
	if listen == "" {
		return parseURL(DefaultURL)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		return nil, fmt.Errorf("%s %q is not a host:port address and %s is unset", EnvListen, listen, EnvURL)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
}

// TokenFromEnv returns the token from BLUEGREEN_ADMIN_TOKEN or the file
// named by BLUEGREEN_ADMIN_TOKEN_FILE (trailing white space trimmed), or ""
// when neither is set. Errors never contain the token.
func TokenFromEnv(getenv func(string) string) (string, error) {
	tok, file := getenv(EnvToken), getenv(EnvTokenFile)
	if tok != "" && file != "" {
		return "", fmt.Errorf("both %s and %s are set: set only one", EnvToken, EnvTokenFile)
	}
	from := EnvToken
	if file != "" {
		from = EnvTokenFile
		data, err := os.ReadFile(file)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return "", fmt.Errorf("%s: cannot read %s: %v", EnvTokenFile, file, err)
		}
		tok = strings.TrimRight(string(data), " \t\r\n")
		if tok == "" {
			return "", fmt.Errorf("%s: %s is empty", EnvTokenFile, file)
		}
	}
	if strings.ContainsFunc(tok, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", fmt.Errorf("%s: the token contains a line break or another control character", from)
	}
	return tok, nil
}
