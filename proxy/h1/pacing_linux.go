//go:build linux

package h1

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// BBR paces what a socket sends: without the fq queueing discipline TCP
// spaces its segments itself, with a high-resolution timer, and sends the
// next ones from the timer's softirq. Between two sockets of one host
// there is no queue and no loss to pace for, only that timer work: with
// BBR the system's default, a spliced 1 GiB body cost the proxy 0.40-0.42 s
// of CPU per GB, and 0.29-0.30 with its sending socket on Reno, which ran
// it 1.31x faster both ways (bench/results/2026-12-02-bodies-round3.md).
// So before a large body is spliced to a loopback peer, a BBR socket is
// switched to Reno, which Linux allows without privilege unless the
// administrator took it out of net.ipv4.tcp_allowed_congestion_control
// (then the socket stays as it was). A peer elsewhere keeps the system's
// choice, made for the network in between.

// unpacedCC is what a loopback socket sending a large body runs.
const unpacedCC = "reno"

// wantUnpaced reports whether a socket to remote that runs cc should be
// switched to unpacedCC.
func wantUnpaced(remote net.Addr, cc string) bool {
	a, ok := remote.(*net.TCPAddr)
	return ok && a.IP.IsLoopback() && cc == "bbr"
}

// unpaceLoopback switches rc, a TCP socket to remote, to unpacedCC when
// wantUnpaced says so. A failure leaves the socket as it was: it only
// costs speed.
func unpaceLoopback(rc syscall.RawConn, remote net.Addr) {
	if a, ok := remote.(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		cc, err := unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil || !wantUnpaced(remote, cc) {
			return
		}
		_ = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, unpacedCC)
	})
}
