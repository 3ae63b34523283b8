package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// backendTransport is the RoundTripper of one Backend's reverse proxy: the
// net/http codec's attempt loop. Every failed attempt goes to
// Pool.attemptFailed, which judges it, charges the instance when it is the
// instance's fault and decides the retry (once, on another available
// instance of the same colour). The success path allocates nothing.
type backendTransport struct {
	b    *Backend
	base http.RoundTripper
}

// attemptError is the last failed attempt of a request: the instance it went
// to and the verdict, already counted.
type attemptError struct {
	b   *Backend
	v   verdict
	err error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.b
	began := time.Now() // for colorfail.go: was the request routed before a switch?
	res, err := b.roundTrip(t.base, req)
	if err == nil {
		return b.answer(res), nil
	}
	var body *clientBody
	if rec, _ := req.Context().Value(recorderKey{}).(*statusRecorder); rec != nil {
		body = rec.body
	}
	for try := 0; ; try++ {
		if body != nil && body.err != nil {
			err = body.err // the client's body failed the attempt
		}
		a := attempt{method: req.Method, hasBody: body != nil, bodySent: body != nil && body.started, firstTry: try == 0, try: try, start: began}
		v, next, _ := b.pool.attemptFailed(req.Context(), b, err, a)
		if next == nil {
			return nil, &attemptError{b: b, v: v, err: err}
		}
		retry := req.Clone(req.Context())
		if body != nil {
			retry.Body = body
		}
		retry.URL = retarget(req.URL, b.url, next.url)
		b = next
		res, err = b.roundTrip(t.base, retry)
		if err == nil {
			return b.answer(res), nil
		}
	}
}

// roundTrip sends one attempt to b: on the direct leg when it can take
// the request, else through the instance's own Transport, or base when
// the Config gave one.
func (b *Backend) roundTrip(base http.RoundTripper, req *http.Request) (*http.Response, error) {
	if b.direct != nil && directable(req) {
		return b.direct.roundTrip(req)
	}
	var res *http.Response
	var err error
	if b.own != nil {
		res, err = b.own.RoundTrip(req)
	} else {
		res, err = base.RoundTrip(req)
	}
	if err != nil {
		return nil, err
	}
	if res.StatusCode < 100 {
		// Go's client takes "099" or "000" for a final answer, and its
		// server panics on writing it: the instance's malformed answer.
		res.Body.Close()
		return nil, errStatus(res.StatusCode)
	}
	if err := badFieldName(res.Header); err != nil {
		res.Body.Close()
		return nil, err
	}
	return res, nil
}

// badFieldName fails an answer with a field whose name is not a token,
// as the fast codec and HTTP/2 do: Go's response parser keeps a name
// with a space in it or before its colon ("Content-Length : 2"), and
// net/http's server drops it on the way out, which could leave the
// client an answer without its length, read until the instance closes.
func badFieldName(h http.Header) error {
	for name := range h {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("proxy: the instance's answer has a malformed field name %q", name)
		}
	}
	return nil
}

// errStatus is an answer whose status code is below 100: 502, charged
// to the instance, as the fast codec answers it.
func errStatus(code int) error {
	return fmt.Errorf("proxy: the instance answered with status code %03d", code)
}

// recorderKey finds a request's statusRecorder in its context: the
// attempt loop takes the client's body from it (ReverseProxy hides the
// body behind a wrapper that a failed attempt closes for good), and an
// answer's body tells it when the instance broke the body off.
type recorderKey struct{}

// clientBody is a request body on the net/http codec: it gives the client
// ClientBodyTimeout between two reads and remembers a failure on the
// client's side, so the pipeline never charges it to an instance. Close
// does not close the client's body: a request not sent yet may go again.
type clientBody struct {
	rc      io.ReadCloser
	ctl     *http.ResponseController
	timeout time.Duration
	started bool // a read was attempted: the body cannot be sent again
	done    bool
	err     *h1.ClientError
}

func (cb *clientBody) Read(p []byte) (int, error) {
	if cb.err != nil {
		return 0, cb.err
	}
	if cb.done {
		return 0, io.EOF
	}
	cb.started = true
	_ = cb.ctl.SetReadDeadline(time.Now().Add(cb.timeout))
	n, err := cb.rc.Read(p)
	if err == io.EOF {
		cb.done = true
		_ = cb.ctl.SetReadDeadline(time.Time{})
		return n, err
	}
	if err != nil {
		cb.err = clientReadError(err)
		return n, cb.err
	}
	return n, nil
}

func (cb *clientBody) Close() error { return nil }

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
