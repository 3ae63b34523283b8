package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/cryoprotect/bluegreen/internal/localfault"
	"github.com/cryoprotect/bluegreen/proxy/h1"
)

// fault says whose failure ended a request.
type fault uint8

const (
	noFault       fault = iota
	clientFault         // the client's: counted in bluegreen_client_errors_total, never against an instance
	instanceFault       // the instance's: counted in bluegreen_upstream_errors_total and fed to outlier detection
	localFault          // the proxy's own (out of descriptors, ports or memory): bluegreen_local_errors_total, nobody charged
)

// Kinds of bluegreen_client_errors_total.
const (
	ClientMalformed = h1.ClientMalformed // a malformed request (framing, body): 400
	ClientTimeout   = h1.ClientTimeout   // the client stopped sending its body: 408
	ClientGone      = h1.ClientGone      // the client left before its answer: 499
)

var clientKinds = [...]string{ClientMalformed, ClientTimeout, ClientGone}

// verdict is judge's reading of a failure.
type verdict struct {
	status int // what the client gets
	fault  fault
	kind   string
}

// judge is the one place that decides whose fault a failure is, and the
// status that answers it. A *h1.ClientError (from either codec) or a
// cancelled request is the client's; a connection the proxy could not open
// for want of a resource of its own is nobody's but the proxy's (503, of a
// kind of localfault); anything else is the instance's, of a kind of
// bluegreen_upstream_errors_total.
func judge(ctx context.Context, err error) verdict {
	var ce *h1.ClientError
	if errors.As(err, &ce) {
		return clientVerdict(ce.Kind)
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return clientVerdict(ClientGone)
	}
	if kind, ok := localfault.Of(err); ok {
		return verdict{status: http.StatusServiceUnavailable, fault: localFault, kind: kind}
	}
	status, kind := classify(err)
	return verdict{status: status, fault: instanceFault, kind: kind}
}

func clientVerdict(kind string) verdict {
	v := verdict{fault: clientFault, kind: kind}
	switch kind {
	case ClientMalformed:
		v.status = http.StatusBadRequest
	case ClientTimeout:
		v.status = http.StatusRequestTimeout
	default:
		v.status = 499
	}
	return v
}

// classify maps an instance's failure to the status the client gets and
// the kind counted in bluegreen_upstream_errors_total.
func classify(err error) (status int, kind string) {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return http.StatusGatewayTimeout, KindTimeout
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return http.StatusBadGateway, KindDial
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "server closed idle connection") { // net/http's unexported errServerClosedIdle
		return http.StatusBadGateway, KindReset
	}
	return http.StatusBadGateway, KindOther
}

// clientReadError is the verdict on an error reading a client's request
// body on the net/http codec.
func clientReadError(err error) *h1.ClientError {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return &h1.ClientError{Kind: ClientTimeout, Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, http.ErrBodyReadAfterClose):
		return &h1.ClientError{Kind: ClientGone, Err: err}
	}
	return &h1.ClientError{Kind: ClientMalformed, Err: err}
}
