package localfault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

func TestOf(t *testing.T) {
	dial := func(errno syscall.Errno) error { // as net.Dialer reports a failed socket(2) or connect(2)
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)}
	}
	for _, tc := range []struct {
		name string
		err  error
		kind string
	}{
		{"EMFILE", dial(syscall.EMFILE), FDs},
		{"ENFILE", dial(syscall.ENFILE), FDs},
		{"EADDRNOTAVAIL", dial(syscall.EADDRNOTAVAIL), Ports},
		{"ENOBUFS", dial(syscall.ENOBUFS), Memory},
		{"ENOMEM", dial(syscall.ENOMEM), Memory},
		{"wrapped by net/http's client", &url.Error{Op: "Get", URL: "http://x/health", Err: dial(syscall.EMFILE)}, FDs},
		{"wrapped again", fmt.Errorf("probe: %w", dial(syscall.EADDRNOTAVAIL)), Ports},
		// The instance's doing, or the client's: not local.
		{"ECONNREFUSED", dial(syscall.ECONNREFUSED), ""},
		{"ECONNRESET", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, ""},
		{"timeout", context.DeadlineExceeded, ""},
		{"EOF", io.ErrUnexpectedEOF, ""},
		{"other", errors.New("boom"), ""},
		{"nil", nil, ""},
	} {
		kind, ok := Of(tc.err)
		if kind != tc.kind || ok != (tc.kind != "") {
			t.Errorf("%s: Of = %q, %v; want %q", tc.name, kind, ok, tc.kind)
		}
	}
}
