package adminclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Probe paths of the admin listener.
const (
	ReadyPath = "readyz"  // 200 when the active colour has a healthy instance
	LivePath  = "healthz" // 200 while the process answers
)

// ProbeError is a probe's answer other than 200.
type ProbeError struct {
	Path   string // "readyz" or "healthz"
	Status string // e.g. "503 Service Unavailable"
	Reason string // the answer's reason or error, on one line; may be ""
}

func (e *ProbeError) Error() string {
	why := ""
	if e.Reason != "" {
		why = ": " + e.Reason
	}
	return fmt.Sprintf("/%s answered %s%s", e.Path, e.Status, why)
}

// Probe makes one GET of base/path (ReadyPath or LivePath) within timeout,
// on a connection of its own, without retries, proxies or redirects. It
// returns nil on a 200 answer, a *ProbeError on another answer, and an
// error naming the URL when no answer came.
func Probe(ctx context.Context, base *url.URL, path string, timeout time.Duration) error {
	u := base.JoinPath(path)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	tr := &http.Transport{DisableKeepAlives: true} // no proxy, no pooled connection
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %s", u.Redacted(), ShortNetCause(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var body struct {
		Reason string `json:"reason"`
		Error  string `json:"error"`
	}
	_ = json.Unmarshal(data, &body)
	why := body.Reason
	if why == "" {
		why = body.Error
	}
	return &ProbeError{Path: path, Status: resp.Status, Reason: strings.Join(strings.Fields(why), " ")}
}
