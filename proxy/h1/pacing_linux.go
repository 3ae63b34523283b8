//go:build linux

package h1

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// BBR paces what a socket sends: without the fq queueing discipline TCP
// spaces its segments itself, with a high-resolution timer, and sends the
// next ones from the timer's softirq. Between two sockets of the same host
// there is no queue and no loss to pace for, and on loopback that timer
// work was a third of what a spliced body cost the relay (bench/relay:
// 1 GiB downloads, 1.3-2.4x faster and 25-30 % less CPU with Reno on its
// sockets; bench/results/2026-12-02-bodies-round3.md). So before a large
// body is spliced to a loopback peer, a BBR socket is switched to Reno,
// which every Linux allows without privilege
// (net.ipv4.tcp_allowed_congestion_control always lists it). A peer
// elsewhere keeps the system's choice, which is made for the network in
// between.

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
