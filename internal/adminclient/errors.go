package adminclient

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"

	"github.com/cryoprotect/bluegreen/admin"
)

// Exit codes of the client commands (status, cutover, rollback, history,
// healthcheck):
//
//	0  success
//	1  the operation was refused or failed: a 4xx/5xx answer, a wait timed
//	   out, the healthcheck failed
//	2  bad usage or configuration: a bad flag, a bad environment value, an
//	   unreadable token file
//	3  the admin API cannot be reached (after retries)
//	4  the active colour switched away from the target during a watch
//	   (an auto-rollback, or any other switch)
//
// A healthcheck exits only 0 or 1, whatever goes wrong, because Docker
// reserves exit status 2 of a HEALTHCHECK command.
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitUnreachable = 3
	ExitSwitchedOff = 4
)

// ExitCode maps an error of a Client call to the exit code of a client
// command: nil is ExitOK, an *UnreachableError is ExitUnreachable, anything
// else (an *APIError, an ended context, a bad answer) is ExitFailed.
func ExitCode(err error) int {
	var ue *UnreachableError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUnreachable
	}
	return ExitFailed
}

// UnreachableError reports that no answer came back, after retries.
type UnreachableError struct {
	Base *url.URL
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the admin API at %s: %s", e.Base.Redacted(), ShortNetCause(e.Err))
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// APIError is a non-2xx answer of the admin API.
type APIError struct {
	Status int
	Body   admin.ErrorBody // zero when the answer was not an error body
	Raw    []byte          // the answer's body as received
}

func (e *APIError) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = "the admin API answered " + strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
	}
	return msg
}

// ShortNetCause turns a transport error into a few words.
func ShortNetCause(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "cannot resolve " + dns.Name + ": " + dns.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
