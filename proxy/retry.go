package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// backendTransport is the RoundTripper of one Backend's reverse proxy. It
// feeds every attempt's outcome to the error counters and outlier detection
// and retries once, on another available instance of the same colour, a
// request that is safe to send again: an idempotent method without a body
// whose attempt failed before any response byte arrived (the connection was
// refused, or a connection was reset or closed before the answer). The
// success path allocates nothing.
type backendTransport struct {
	b    *Backend
	base http.RoundTripper
}

// attemptError is the last failed attempt of a request: the instance it went
// to and the error kind, already counted.
type attemptError struct {
	b    *Backend
	kind string
	err  error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.b
	res, err := t.base.RoundTrip(req)
	if err == nil {
		b.observe(res)
		return res, nil
	}
	kind := b.attemptFailed(req.Context(), err)
	if !retryable(req, kind) {
		return t.failover(req, b, kind, err)
	}
	alt := b.pool.pickOther(b)
	if alt == nil {
		if kind == KindDial {
			return t.failover(req, b, kind, err)
		}
		// A reset on a kept-alive connection: a fresh one to the same
		// instance is the next best thing.
		alt = b
	}
	retry := req.Clone(req.Context())
	retry.URL = retarget(req.URL, b.url, alt.url)
	b.pool.metrics.retried()
	res, err = t.base.RoundTrip(retry)
	if err == nil {
		alt.observe(res)
		return res, nil
	}
	kind = alt.attemptFailed(req.Context(), err)
	return t.failover(req, alt, kind, err)
}

// observe feeds an answer to outlier detection: 5xx is a failure.
func (b *Backend) observe(res *http.Response) {
	b.answered(res.StatusCode)
	if res.StatusCode >= 500 {
		b.failedAnswer()
		return
	}
	b.succeeded()
}

// attemptFailed counts a failed attempt and returns its kind; "" when the
// client went away, which is nobody's failure.
func (b *Backend) attemptFailed(ctx context.Context, err error) string {
	_, kind := classify(ctx, err)
	if kind == "" {
		return ""
	}
	b.errs.inc(kind)
	b.failedAttempt(kind)
	return kind
}

// retryable reports whether a request whose attempt failed with kind may be
// sent again: nothing of it was processed (refused connection) or it is
// idempotent and the failure came before any response byte, and it has no
// body that was consumed.
func retryable(req *http.Request, kind string) bool {
	return mayRetry(req.Method, req.Body != nil && req.Body != http.NoBody, kind)
}

// mayRetry is the retry policy of both paths: a refused connection or a
// reset before any response byte, of an idempotent method without a body.
func mayRetry(method string, hasBody bool, kind string) bool {
	if kind != KindDial && kind != KindReset || hasBody {
		return false
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// retarget moves the outgoing URL u, built for the instance at from, to the
// instance at to, keeping the path below the instance's base path.
func retarget(u, from, to *url.URL) *url.URL {
	v := *u
	v.Scheme, v.Host = to.Scheme, to.Host
	if from.Path == to.Path && from.RawPath == to.RawPath {
		return &v
	}
	rest := strings.TrimPrefix(u.EscapedPath(), strings.TrimSuffix(from.EscapedPath(), "/"))
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	esc := strings.TrimSuffix(to.EscapedPath(), "/") + rest
	p, err := url.PathUnescape(esc)
	if err != nil {
		return &v
	}
	v.Path, v.RawPath = p, ""
	if v.EscapedPath() != esc {
		v.RawPath = esc
	}
	return &v
}

// errAttempt extracts the counted attempt behind a proxy error, if any.
func errAttempt(err error) *attemptError {
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}
